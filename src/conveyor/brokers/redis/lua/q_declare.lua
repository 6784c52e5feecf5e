--@include q_common
-- Give a declared queue its priority-0 stream and group, so that entries other clients
-- add to it are read too.
-- ARGV: prefix, queue
ensure_level(ARGV[1], ARGV[2], 0)
return 1
