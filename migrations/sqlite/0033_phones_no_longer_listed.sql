-- Phones the control plane stopped listing (chapter 4.3.1): their server was released, or
-- the phone deleted, outside cphub. Phone sync notes when a complete listing first left a
-- phone out (`missed_at`, cleared when one lists it again) and marks it `unlisted_at` when a
-- listing begun after that also leaves it out: one listing can miss a phone that a deletion
-- elsewhere moved across a page boundary while it was read (offset paging, newest first),
-- and two replicas' listings can overlap in time. An unlisted phone is not allocated, not
-- recovered and not counted in its server's incident arithmetic (store/book.rs).
ALTER TABLE phones ADD COLUMN missed_at INTEGER;    -- epoch ms
ALTER TABLE phones ADD COLUMN unlisted_at INTEGER;  -- epoch ms
