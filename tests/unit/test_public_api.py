import conveyor


def test_public_names_are_sorted_and_all_importable() -> None:
    assert conveyor.__all__ == sorted(conveyor.__all__)
    for name in conveyor.__all__:
        assert hasattr(conveyor, name), name
