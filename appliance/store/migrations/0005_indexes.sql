-- 0005_indexes: indexes for the queries a year of studies makes slow.
--
-- Measured on a store of 15,000 studies (a busy clinic's year): without `outbox_study` every
-- worklist row, results page and sync-page row counted its study's undelivered items by reading
-- the whole outbox (75,000 rows: 5 items a signed study), and the retention pass did so per photograph, a quadratic
-- scan run after every sync pass. `outbox_image` serves retention's "photograph delivered"
-- test; `images_source` the re-import check of every import and `study add`;
-- `results_based_on` the annotations' "latest sign-off of this automatic result".

CREATE INDEX IF NOT EXISTS outbox_study ON outbox(study_id, state);
CREATE INDEX IF NOT EXISTS outbox_image ON outbox(image_id, kind, state);
CREATE INDEX IF NOT EXISTS images_source ON images(source_sha256, seq);
CREATE INDEX IF NOT EXISTS results_based_on ON results(based_on, kind, seq);
-- The worklist's search by patient ID, newest first.
CREATE INDEX IF NOT EXISTS studies_patient ON studies(patient_id, seq);
-- The last confirmed delivery, which the Sync page, the status and the LEDs show.
CREATE INDEX IF NOT EXISTS outbox_delivered ON outbox(state, delivered_seq);
