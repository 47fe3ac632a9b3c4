-- Fleet schema 2: old states pruned.
--
-- The server deletes, in small batches, the states a newer one replaced
-- longer ago than its --keep-history (each host's latest state is always
-- kept): this index lets it walk them oldest first. Events and the trail are
-- never deleted. States stay TEXT: TOAST compresses them already (the SQLite
-- backend compresses its own from this version on).
CREATE INDEX fleet_states_by_received ON fleet_states (received_at);
