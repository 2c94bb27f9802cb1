-- 0003_annotations: clinicians' decisions turned into training examples for fine-tuning.
--
-- One row per (result, lesion) with an effective decision (accepted, rejected, added; undone
-- decisions drop out). Rebuilt per result from the decision log by appliance.store.annotations,
-- so the log stays the one source of truth and this table can always be regenerated. The tile
-- crop is kept as its own PNG file (`tile_path`, relative to the data folder) so the example
-- outlives the photograph when retention removes it. No patient identifier is stored here.

CREATE TABLE IF NOT EXISTS annotations (
    id              INTEGER PRIMARY KEY,
    result_id       INTEGER NOT NULL REFERENCES results(id),
    image_id        INTEGER NOT NULL REFERENCES images(id),
    lesion_id       INTEGER NOT NULL,
    decision        TEXT NOT NULL CHECK (decision IN ('accepted', 'rejected', 'added')),
    decision_seq    INTEGER NOT NULL,          -- seq of the decisive row in `decisions`
    actor           TEXT NOT NULL,             -- who decided
    decided_at      TEXT NOT NULL,             -- when (UTC ISO 8601, display only)
    x               REAL NOT NULL,             -- lesion centroid, image px
    y               REAL NOT NULL,
    box_x0          INTEGER NOT NULL,          -- prompt box, image px, exclusive end
    box_y0          INTEGER NOT NULL,
    box_x1          INTEGER NOT NULL,
    box_y1          INTEGER NOT NULL,
    mask_x0         INTEGER NOT NULL,          -- mask crop origin, image px
    mask_y0         INTEGER NOT NULL,
    mask_w          INTEGER NOT NULL,
    mask_h          INTEGER NOT NULL,
    mask            BLOB NOT NULL,             -- np.packbits of the boolean crop, row-major
    tile_row        INTEGER NOT NULL,          -- cell of the fixed grid (imaging.tiling)
    tile_col        INTEGER NOT NULL,
    tile_x0         INTEGER NOT NULL,
    tile_y0         INTEGER NOT NULL,
    tile_size       INTEGER NOT NULL,
    tile_path       TEXT,                      -- PNG of the tile crop, NULL if the photo was gone
    image_sha256    TEXT NOT NULL,
    score           REAL,                      -- the appliance's score (NULL for added)
    source          TEXT NOT NULL,             -- model / saliency / clinician
    features_json   TEXT NOT NULL DEFAULT '{}',
    model_name      TEXT NOT NULL,
    model_sha256    TEXT NOT NULL,
    model_version   TEXT NOT NULL,
    created_at      TEXT NOT NULL,
    UNIQUE (result_id, lesion_id)
);

CREATE INDEX IF NOT EXISTS annotations_decision ON annotations(decision, decision_seq);

-- Highest decision seq already turned into annotations.
CREATE TABLE IF NOT EXISTS annotation_cursor (
    name   TEXT PRIMARY KEY,
    seq    INTEGER NOT NULL
);
INSERT OR IGNORE INTO annotation_cursor (name, seq) VALUES ('decisions', 0);
