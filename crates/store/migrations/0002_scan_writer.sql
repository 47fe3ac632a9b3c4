-- Schema version 2: which process writes a scan, so that a scan whose process
-- died (kill -9, a full disk, a power cut) is known to be interrupted instead
-- of "running" forever, and is never taken as the newest scan to diff.
--
-- `writer` is `BOOT_ID/PID/START_TIME` (the kernel's boot id, and the pid with
-- its start time in clock ticks since boot, from /proc/PID/stat): a pid alone
-- is reused, the three together name one process of one boot. NULL for scans
-- stored before version 2, and for scans whose writer could not be named.
ALTER TABLE scans ADD COLUMN writer TEXT;
