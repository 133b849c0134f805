//! Snapshot files, as every state backend writes them and checkpoints and savepoints
//! list them ([`FileEntry`]). The entry file is a sequence of (key, value) byte pairs
//! with a checksum, used for in-memory keyed state and for timers. Entries are written in key order, so that
//! a file's key groups are contiguous.
//!
//! ```text
//! "WEIRENT1" | (u32 BE key len | key | u32 BE value len | value)* | "END!" | u32 BE crc32
//! ```

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::Path;

/// A file of a snapshot, relative to the checkpoint (or savepoint) root.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FileEntry {
    pub path: String,
    pub size: u64,
    pub crc32: u32,
}

/// The CRC-32 of a whole file, as [`FileEntry`] records it.
pub fn file_crc(path: &Path) -> std::io::Result<u32> {
    let mut file = File::open(path)?;
    let mut hasher = crc32fast::Hasher::new();
    let mut buf = vec![0; 1 << 16];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            return Ok(hasher.finalize());
        }
        hasher.update(&buf[..n]);
    }
}

const MAGIC: &[u8; 8] = b"WEIRENT1";
const END: &[u8; 4] = b"END!";

/// The size of an entry file with no entries: magic, end marker, checksum.
pub const EMPTY_SIZE: u64 = (MAGIC.len() + END.len() + 4) as u64;

/// Writes an entry file and returns its size and checksum (of the whole file).
pub struct EntryWriter {
    out: BufWriter<File>,
    hasher: crc32fast::Hasher,
    size: u64,
}

impl EntryWriter {
    pub fn create(path: &Path) -> std::io::Result<Self> {
        let mut writer = EntryWriter {
            out: BufWriter::with_capacity(1 << 16, File::create(path)?),
            hasher: crc32fast::Hasher::new(),
            size: 0,
        };
        writer.raw(MAGIC)?;
        Ok(writer)
    }

    fn raw(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.hasher.update(bytes);
        self.size += bytes.len() as u64;
        self.out.write_all(bytes)
    }

    pub fn entry(&mut self, key: &[u8], value: &[u8]) -> std::io::Result<()> {
        self.raw(&(key.len() as u32).to_be_bytes())?;
        self.raw(key)?;
        self.raw(&(value.len() as u32).to_be_bytes())?;
        self.raw(value)
    }

    /// Finishes the file, syncs it to disk, and returns its size and the CRC-32 of the
    /// whole file (what checkpoint metadata records for every file).
    pub fn finish(mut self) -> std::io::Result<(u64, u32)> {
        self.raw(END)?;
        let content_crc = self.hasher.clone().finalize();
        self.raw(&content_crc.to_be_bytes())?;
        let file = self.out.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        Ok((self.size, self.hasher.finalize()))
    }
}

/// Writes `entries` as the entry file `root/relative` and describes it.
pub fn write_file<'a>(
    root: &Path,
    relative: &str,
    entries: impl IntoIterator<Item = (&'a [u8], &'a [u8])>,
) -> Result<FileEntry, String> {
    write_file_with(root, relative, |put| entries.into_iter().try_for_each(|(k, v)| put(k, v)))
}

/// Writes the entry file `root/relative` from what `fill` hands to the `put` it gets,
/// in key order, and describes it: for entries read one at a time from a source that
/// can fail (a database), so that none are collected first.
pub fn write_file_with(
    root: &Path,
    relative: &str,
    fill: impl FnOnce(&mut dyn FnMut(&[u8], &[u8]) -> Result<(), String>) -> Result<(), String>,
) -> Result<FileEntry, String> {
    let path = root.join(relative);
    let io = |e: std::io::Error| format!("{}: {e}", path.display());
    std::fs::create_dir_all(path.parent().expect("has a parent")).map_err(io)?;
    let mut writer = EntryWriter::create(&path).map_err(io)?;
    fill(&mut |k, v| writer.entry(k, v).map_err(io))?;
    let (size, crc32) = writer.finish().map_err(io)?;
    Ok(FileEntry { path: relative.to_string(), size, crc32 })
}

/// Reads every entry of a file written by [`EntryWriter`], checking its framing and
/// checksum. Any damage is an error naming the file.
pub fn read_entries(path: &Path, mut visit: impl FnMut(Vec<u8>, Vec<u8>)) -> Result<(), String> {
    let bad = |what: &str| format!("{}: {what}", path.display());
    let file = File::open(path).map_err(|e| bad(&e.to_string()))?;
    let mut input = BufReader::with_capacity(1 << 16, file);
    let mut hasher = crc32fast::Hasher::new();
    let mut read = |n: usize, hasher: &mut crc32fast::Hasher| -> Result<Vec<u8>, String> {
        let mut buf = vec![0; n];
        input.read_exact(&mut buf).map_err(|_| bad("truncated"))?;
        hasher.update(&buf);
        Ok(buf)
    };
    if read(8, &mut hasher)? != MAGIC {
        return Err(bad("not a weir snapshot entry file"));
    }
    loop {
        let head = read(4, &mut hasher)?;
        if head == END {
            break;
        }
        let key_len = u32::from_be_bytes(head.try_into().expect("4 bytes")) as usize;
        let key = read(key_len, &mut hasher)?;
        let value_len = u32::from_be_bytes(read(4, &mut hasher)?.try_into().expect("4 bytes")) as usize;
        let value = read(value_len, &mut hasher)?;
        visit(key, value);
    }
    let expected = hasher.finalize();
    let stored = u32::from_be_bytes(read(4, &mut crc32fast::Hasher::new())?.try_into().expect("4 bytes"));
    if stored != expected {
        return Err(bad("checksum mismatch"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_damage_is_detected() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("e");
        let mut w = EntryWriter::create(&path).unwrap();
        w.entry(b"k1", b"v1").unwrap();
        w.entry(b"", b"empty key").unwrap();
        let (size, crc) = w.finish().unwrap();
        assert_eq!(size, std::fs::metadata(&path).unwrap().len());
        assert_eq!(crc, crate::state::snapshot::file_crc(&path).unwrap());
        let mut seen = Vec::new();
        read_entries(&path, |k, v| seen.push((k, v))).unwrap();
        assert_eq!(seen, vec![(b"k1".to_vec(), b"v1".to_vec()), (vec![], b"empty key".to_vec())]);

        let empty = dir.path().join("empty");
        assert_eq!(EntryWriter::create(&empty).unwrap().finish().unwrap().0, EMPTY_SIZE);

        let mut bytes = std::fs::read(&path).unwrap();
        bytes[12] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        assert!(read_entries(&path, |_, _| {}).unwrap_err().contains("checksum mismatch"));
        std::fs::write(&path, &bytes[..bytes.len() - 6]).unwrap();
        assert!(read_entries(&path, |_, _| {}).unwrap_err().contains("truncated"));
    }
}
