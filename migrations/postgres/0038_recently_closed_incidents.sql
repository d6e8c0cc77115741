-- Server incidents closed lately (outcome `closed`, migration 0005), read by the watchdog
-- every pass for the grace after them. The grace was kept in the memory of the replica
-- that closed the incident, so a replica taking the watchdog over, or cphub restarted,
-- restarted the server's phones still booting at once.
CREATE INDEX recoveries_closed ON recoveries (ended_at) WHERE outcome = 'closed';
