-- 0001_store: studies, photographs, segmentation results, clinicians' decisions and the outbox.
--
-- Every record carries `seq`, drawn from the single counter in `store_counter` inside the same
-- transaction: the order of events is `seq`, never a wall-clock column. Wall-clock columns
-- (`*_at`, UTC ISO 8601) are for display and retention only; a wrong clock cannot reorder,
-- hide or drop a record.

CREATE TABLE store_counter (
    name  TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
INSERT INTO store_counter (name, value) VALUES ('seq', 0);

CREATE TABLE studies (
    id          INTEGER PRIMARY KEY,
    seq         INTEGER NOT NULL UNIQUE,
    study_uid   TEXT NOT NULL UNIQUE,       -- DICOM StudyInstanceUID, fixed at creation
    patient_id  TEXT NOT NULL,
    eye         TEXT NOT NULL CHECK (eye IN ('L', 'R')),
    created_at  TEXT NOT NULL
);

CREATE TABLE images (
    id              INTEGER PRIMARY KEY,
    seq             INTEGER NOT NULL UNIQUE,
    study_id        INTEGER NOT NULL REFERENCES studies(id),
    path            TEXT NOT NULL,          -- relative to the data folder; lossless PNG, RGB
    sha256          TEXT NOT NULL,          -- of the PNG file
    source_sha256   TEXT NOT NULL,          -- of the file as it arrived
    source_name     TEXT NOT NULL,
    width           INTEGER NOT NULL,
    height          INTEGER NOT NULL,
    fov_deg         REAL,
    camera_json     TEXT NOT NULL DEFAULT '{}',
    series_uid      TEXT NOT NULL UNIQUE,
    sop_uid         TEXT NOT NULL UNIQUE,
    created_at      TEXT NOT NULL,
    deleted_at      TEXT,                   -- set when retention removed the file
    deleted_seq     INTEGER
);

CREATE TABLE results (
    id              INTEGER PRIMARY KEY,
    seq             INTEGER NOT NULL UNIQUE,
    study_id        INTEGER NOT NULL REFERENCES studies(id),
    image_id        INTEGER NOT NULL REFERENCES images(id),
    kind            TEXT NOT NULL CHECK (kind IN ('auto', 'reviewed')),
    based_on        INTEGER REFERENCES results(id),  -- the automatic result a review is of
    json_path       TEXT NOT NULL,          -- result JSON (lesions, model, gaze summary)
    json_sha256     TEXT NOT NULL,
    masks_path      TEXT NOT NULL,          -- npz of per-lesion boolean crops
    masks_sha256    TEXT NOT NULL,
    mode            TEXT NOT NULL,
    model_name      TEXT NOT NULL,
    model_sha256    TEXT NOT NULL,
    lesion_count    INTEGER NOT NULL,       -- lesions in the result's mask
    grade           TEXT,
    referral        TEXT,
    signed_by       TEXT,
    created_at      TEXT NOT NULL
);

CREATE TABLE decisions (
    id          INTEGER PRIMARY KEY,
    seq         INTEGER NOT NULL UNIQUE,
    result_id   INTEGER NOT NULL REFERENCES results(id),
    lesion_id   INTEGER NOT NULL,
    action      TEXT NOT NULL CHECK (action IN ('accept', 'reject', 'add', 'undo')),
    undoes      INTEGER REFERENCES decisions(id),
    lesion_json TEXT,                       -- for 'add': the lesion drawn by the clinician
    mask        BLOB,                       -- for 'add': np.packbits of the boolean crop
    actor       TEXT NOT NULL,
    created_at  TEXT NOT NULL
);

CREATE TABLE outbox (
    id                INTEGER PRIMARY KEY,
    seq               INTEGER NOT NULL UNIQUE,
    idempotency_key   TEXT NOT NULL UNIQUE,
    study_id          INTEGER NOT NULL REFERENCES studies(id),
    image_id          INTEGER NOT NULL REFERENCES images(id),
    result_id         INTEGER REFERENCES results(id),
    kind              TEXT NOT NULL CHECK (kind IN ('photo', 'seg', 'sr')),
    study_uid         TEXT NOT NULL,
    series_uid        TEXT NOT NULL,
    sop_uid           TEXT NOT NULL UNIQUE,
    path              TEXT,                 -- the built DICOM file, relative to the data folder
    content_sha256    TEXT,                 -- of that file, fixed when it was first built
    state             TEXT NOT NULL DEFAULT 'pending'
                      CHECK (state IN ('pending', 'sending', 'delivered')),
    attempts          INTEGER NOT NULL DEFAULT 0,
    next_attempt_at   REAL NOT NULL DEFAULT 0,   -- Unix seconds; advisory (clamped on read)
    last_error        TEXT,
    created_at        TEXT NOT NULL,
    delivered_at      TEXT,
    delivered_unix    REAL,
    delivered_seq     INTEGER
);

CREATE INDEX outbox_state ON outbox(state, seq);
CREATE INDEX images_study ON images(study_id);
CREATE INDEX results_study ON results(study_id, seq);
CREATE INDEX decisions_result ON decisions(result_id, seq);
