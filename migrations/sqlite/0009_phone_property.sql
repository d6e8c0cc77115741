-- Issue #15 part 2: a reset restores factory settings (chapter 4.3.5), so it re-applies the
-- phone's own properties, read from the phone's detail (4.3.2) right before. When that read
-- fails, the reset falls back to the properties phone sync last read from the same detail:
-- cph_property is the detail's `property` (a JSON object in a string, appendix A.1), read
-- with access_infos, and cph_property_at when. NULL: never read, or the detail had none.
ALTER TABLE phones ADD COLUMN cph_property TEXT;
ALTER TABLE phones ADD COLUMN cph_property_at INTEGER;
