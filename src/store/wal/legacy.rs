//! Adoption of the pre-release single-file layout.

use std::fs::File;
use std::io;
use std::path::Path;

/// Data directories written before the log had two files hold one `roomd.wal`, with the same
/// records, in what is now file 0 (the database names no file, which reads as 0). After a crash
/// it holds acknowledged groups not yet in redb, so it becomes `roomd.wal.0` rather than being
/// ignored.
pub(super) fn adopt_single_file_log(dir: &Path) -> io::Result<()> {
    let old = dir.join("roomd.wal");
    let new = dir.join("roomd.wal.0");
    if old.exists() && !new.exists() {
        std::fs::rename(&old, &new)?;
        File::open(dir)?.sync_all()?;
    }
    Ok(())
}
