-- Phones the control plane stopped listing (chapter 4.3.1): their server was released, or
-- the phone deleted, outside cphub. Phone sync counts the complete listings in a row that
-- left a phone out (`missed_listings`, back to 0 when one lists it again) and marks it
-- `unlisted_at` at the second: one listing can miss a phone that a deletion elsewhere moved
-- across a page boundary while it was read (offset paging, newest first). An unlisted phone
-- is not allocated, not recovered and not counted in its server's incident arithmetic
-- (store/book.rs).
ALTER TABLE phones ADD COLUMN missed_listings INTEGER NOT NULL DEFAULT 0;
ALTER TABLE phones ADD COLUMN unlisted_at TIMESTAMPTZ;
