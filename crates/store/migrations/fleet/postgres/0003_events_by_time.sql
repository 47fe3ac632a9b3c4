-- Fleet schema 3: events found by the time they were received.
--
-- The monitor's fleet job reads the agents' events received in a time
-- window (the suspicious execs since its last run).
CREATE INDEX fleet_events_by_time ON fleet_events (received_at);
