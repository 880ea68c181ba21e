use super::*;
use crate::lsn::Lsn;
use crate::position::offset::OffsetError;

fn at(lsn: u64) -> OffsetRecord {
    OffsetRecord::test_at(lsn)
}

#[tokio::test]
async fn missing_file_is_no_offset_and_writes_leave_no_temporary_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("offset.json");
    let mut store = FileStore::new(path.clone());
    assert_eq!(store.load().await.unwrap(), None);
    store.store(&at(0x100)).await.unwrap();
    store.store(&at(0x200)).await.unwrap();
    let names: Vec<_> = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(names, ["offset.json"]);
    // A second store instance (a restarted host) reads what was written.
    let mut again = FileStore::new(path);
    let record = again.load().await.unwrap().unwrap();
    assert_eq!(record.commit_end_lsn, Lsn(0x200));
    assert_eq!(record.system_id, 42);
}

#[tokio::test]
async fn a_crash_mid_write_leaves_the_old_record_readable() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("offset.json");
    let mut store = FileStore::new(path.clone());
    store.store(&at(0x100)).await.unwrap();
    // What a crash between writing the temporary file and the rename
    // leaves behind: a torn temporary file next to the intact record.
    let temp = store.temp_path();
    fs::write(&temp, b"{\"version\": 1, \"slot\": \"ord").unwrap();
    let mut restarted = FileStore::new(path.clone());
    assert_eq!(
        restarted.load().await.unwrap().unwrap().commit_end_lsn,
        Lsn(0x100)
    );
    restarted.store(&at(0x300)).await.unwrap();
    assert!(!temp.exists(), "the next write replaces the torn file");
    let text = fs::read_to_string(&path).unwrap();
    assert_eq!(
        OffsetRecord::decode(text.as_bytes())
            .unwrap()
            .commit_end_lsn,
        Lsn(0x300)
    );
}

#[tokio::test]
async fn refuses_to_go_backwards_even_before_loading() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("offset.json");
    FileStore::new(path.clone())
        .store(&at(0x200))
        .await
        .unwrap();
    // A fresh instance that never loaded still compares with the file.
    let mut store = FileStore::new(path.clone());
    let err = store.store(&at(0x1FF)).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "refusing to store offset 0/1FF for slot \"orders\" in offset file {}: it holds 0/200, and a stored offset never moves backwards",
            path.display()
        )
    );
    assert!(matches!(
        err,
        StoreError::Backwards {
            held: Lsn(0x200),
            offered: Lsn(0x1FF),
            ..
        }
    ));
    store.store(&at(0x200)).await.unwrap();
    store.clear().await.unwrap();
    assert!(!path.exists());
    store.clear().await.unwrap();
    store.store(&at(0x10)).await.unwrap();
}

#[tokio::test]
async fn a_corrupt_file_is_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("offset.json");
    fs::write(&path, b"not json").unwrap();
    let mut store = FileStore::new(path.clone());
    let err = store.load().await.unwrap_err();
    assert!(matches!(
        err,
        StoreError::CorruptFile {
            error: OffsetError::Malformed(_),
            ..
        }
    ));
    assert_eq!(
        err.to_string(),
        format!(
            "offset file {} is corrupt: not an offset record: expected ident at line 1 column 2; repair it, or delete it (`sluice offset clear <manifest>`) to let the slot decide where streaming resumes",
            path.display()
        )
    );
    // Storing over a corrupt file is refused too: it cannot tell whether
    // the new position is older.
    assert!(matches!(
        store.store(&at(1)).await.unwrap_err(),
        StoreError::CorruptFile { .. }
    ));
}

#[tokio::test]
async fn a_missing_folder_is_an_error_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nowhere").join("offset.json");
    let err = FileStore::new(path.clone())
        .store(&at(1))
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "cannot create the temporary file for offset file {}: No such file or directory (os error 2)",
            path.display()
        )
    );
}
