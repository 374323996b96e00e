-- An append's first argument (written by `header_ids_and_events` in event_store/append.rs; the
-- unit test `the_header_round_trips_through_the_script` reads Rust's bytes back through this
-- very function): a 17-byte big-endian header — the expected version as a double (-1 any,
-- -2 no stream, -3 stream exists, n exact), the number of event types m (u32), 1 if the event
-- ids strictly increase else 0 (u8), the number of events n (u32) — then the event ids (16
-- bytes each) and the events blob. Captures nothing (see append.lua, "Shape").
local function read_header(arg)
  local expected, m, sorted, n = struct.unpack('>dI4BI4', arg)
  return expected, m, sorted, n, string.sub(arg, 18, 17 + n * 16), string.sub(arg, 18 + n * 16)
end
