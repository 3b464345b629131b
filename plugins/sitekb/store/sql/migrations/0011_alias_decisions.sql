-- The alias audit log records decisions as well as moves: a content owner's
-- approval (the move it allowed) and a rejection (the alias stays; the row
-- names the snapshot that was turned down, who did it and why).
ALTER TABLE sitekb.alias_events ADD COLUMN decision text NOT NULL DEFAULT 'moved'
    CHECK (decision IN ('moved', 'approved', 'rejected'));
