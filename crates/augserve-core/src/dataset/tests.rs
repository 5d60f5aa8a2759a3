use super::*;
use std::io::Write;

fn write(path: &Path, bytes: &[u8]) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, bytes).unwrap();
}

#[test]
fn image_folder_sorts_classes_and_finds_nested_images() {
    let d = tempfile::tempdir().unwrap();
    write(&d.path().join("zebra/a.jpg"), b"z");
    write(&d.path().join("ant/x/b.JPEG"), b"a");
    write(&d.path().join("ant/c.jpg"), b"a2");
    write(&d.path().join("ant/d.png"), b"a3");
    write(&d.path().join("ant/e.webp"), b"a4");
    write(&d.path().join("ant/notes.txt"), b"-");
    let ds = Dataset::open(d.path(), DatasetFormat::ImageFolder, 1 << 20).unwrap();
    assert_eq!(ds.classes(), ["ant", "zebra"]);
    assert_eq!(ds.len(), 5);
    let labels: Vec<i64> = (0..5).map(|i| ds.entry(i).unwrap().label).collect();
    assert_eq!(labels, vec![0, 0, 0, 0, 1]);
    assert_eq!(ds.read(4).unwrap(), b"z");
    assert_eq!(
        DatasetFormat::detect(d.path()).unwrap(),
        DatasetFormat::ImageFolder
    );
}

#[test]
fn symlinks_out_of_the_root_are_never_followed() {
    let outside = tempfile::tempdir().unwrap();
    write(&outside.path().join("secret.jpg"), b"secret");
    let d = tempfile::tempdir().unwrap();
    write(&d.path().join("cls/ok.jpg"), b"ok");
    std::os::unix::fs::symlink(
        outside.path().join("secret.jpg"),
        d.path().join("cls/link.jpg"),
    )
    .unwrap();
    std::os::unix::fs::symlink(outside.path(), d.path().join("cls/dirlink")).unwrap();
    let ds = Dataset::open(d.path(), DatasetFormat::ImageFolder, 1 << 20).unwrap();
    assert_eq!(ds.len(), 1);
    assert_eq!(ds.skipped().len(), 2, "{:?}", ds.skipped());
    // A file list naming a link that escapes: indexed, but refused at read time.
    write(
        &d.path().join("list.txt"),
        b"cls/link.jpg 0\ncls/ok.jpg 1\n",
    );
    let ds = Dataset::open(&d.path().join("list.txt"), DatasetFormat::FileList, 1 << 20).unwrap();
    let err = ds.read(0).unwrap_err();
    assert!(
        err.to_string().contains("outside the dataset root"),
        "{err}"
    );
    assert_eq!(ds.read(1).unwrap(), b"ok");
    // The kernel-checked open never opens an escaping link (nor a directory link's file).
    assert!(ds.open_beneath(Path::new("cls/link.jpg")).is_none());
    assert!(ds
        .open_beneath(Path::new("cls/dirlink/secret.jpg"))
        .is_none());
}

#[test]
fn symlinks_inside_the_root_are_read() {
    let d = tempfile::tempdir().unwrap();
    write(&d.path().join("cls/ok.jpg"), b"ok");
    std::os::unix::fs::symlink("ok.jpg", d.path().join("cls/rel.jpg")).unwrap();
    // Absolute, but inside the root: openat2's RESOLVE_BENEATH refuses it, the resolved
    // path accepts it, as before.
    let abs = d.path().canonicalize().unwrap().join("cls/ok.jpg");
    std::os::unix::fs::symlink(abs, d.path().join("cls/abs.jpg")).unwrap();
    write(
        &d.path().join("list.txt"),
        b"cls/rel.jpg 0\ncls/abs.jpg 1\ncls/gone.jpg 2\n",
    );
    let ds = Dataset::open(&d.path().join("list.txt"), DatasetFormat::FileList, 1 << 20).unwrap();
    assert_eq!(ds.read(0).unwrap(), b"ok");
    assert_eq!(ds.read(1).unwrap(), b"ok");
    // A missing file: the same error as before, from the resolved path.
    let err = ds.read(2).unwrap_err().to_string();
    assert!(err.contains("No such file"), "{err}");
}

#[test]
fn file_list_parses_labels_and_rejects_escapes() {
    let d = tempfile::tempdir().unwrap();
    write(&d.path().join("imgs/a b.jpg"), b"1");
    write(
        &d.path().join("list.txt"),
        b"# comment\nimgs/a b.jpg 3\n\nimgs/missing.jpg 1\nimgs/nolabel.jpg\n",
    );
    let ds = Dataset::open(&d.path().join("list.txt"), DatasetFormat::FileList, 1 << 20).unwrap();
    assert_eq!(ds.len(), 3);
    assert_eq!(ds.entry(0).unwrap().label, 3);
    assert_eq!(ds.entry(2).unwrap().label, -1);
    assert_eq!(ds.num_classes(), 4);
    assert_eq!(ds.read(0).unwrap(), b"1");
    assert!(matches!(ds.read(1), Err(SampleErrorKind::Read(_))));
    for bad in ["../etc/passwd 1", "/etc/passwd 1", "imgs/../../x.jpg 0"] {
        write(&d.path().join("bad.txt"), bad.as_bytes());
        let err =
            Dataset::open(&d.path().join("bad.txt"), DatasetFormat::FileList, 1 << 20).unwrap_err();
        assert!(err.to_string().contains("line 1"), "{err}");
    }
}

#[test]
fn webdataset_shards_pair_images_and_labels() {
    let d = tempfile::tempdir().unwrap();
    let shard = d.path().join("shard-000.tar");
    // Raw headers, so a '..' member can be written (it must never touch the filesystem).
    let mut raw = Vec::new();
    for (name, data) in [
        ("s1.jpg", b"img1".as_slice()),
        ("s1.cls", b"7\n"),
        ("dir/s2.JPG", b"img22"),
        ("dir/s2.cls", b"2"),
        ("s3.cls", b"1"),
        ("s4.png", b"png4"),
        ("s4.cls", b"4"),
        ("../evil.jpg", b"evil"),
    ] {
        let mut h = tar::Header::new_old();
        h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_entry_type(tar::EntryType::Regular);
        h.set_cksum();
        raw.extend_from_slice(h.as_bytes());
        raw.extend_from_slice(data);
        raw.resize(raw.len().div_ceil(512) * 512, 0);
    }
    raw.extend_from_slice(&[0u8; 1024]);
    std::fs::File::create(&shard)
        .unwrap()
        .write_all(&raw)
        .unwrap();

    let ds = Dataset::open(d.path(), DatasetFormat::WebDataset, 1 << 20).unwrap();
    let names: Vec<&str> = (0..ds.len() as u64)
        .map(|i| ds.entry(i).unwrap().name.as_str())
        .collect();
    assert_eq!(
        names,
        vec![
            "shard-000.tar:../evil.jpg",
            "shard-000.tar:dir/s2.JPG",
            "shard-000.tar:s1.jpg",
            "shard-000.tar:s4.png"
        ]
    );
    assert_eq!(ds.entry(3).unwrap().label, 4);
    assert_eq!(ds.entry(1).unwrap().label, 2);
    assert_eq!(ds.entry(2).unwrap().label, 7);
    assert_eq!(ds.entry(0).unwrap().label, -1);
    assert_eq!(ds.read(1).unwrap(), b"img22");
    assert_eq!(ds.read(0).unwrap(), b"evil"); // read from the tar, not from ../evil.jpg
    assert!(ds.skipped().iter().any(|s| s.contains("s3")));
    assert_eq!(
        DatasetFormat::detect(d.path()).unwrap(),
        DatasetFormat::WebDataset
    );
    assert_eq!(
        DatasetFormat::detect(&shard).unwrap(),
        DatasetFormat::WebDataset
    );
}

#[test]
fn bad_datasets_give_clear_errors() {
    let d = tempfile::tempdir().unwrap();
    let missing = d.path().join("nope");
    let e = Dataset::open(&missing, DatasetFormat::ImageFolder, 1 << 20)
        .unwrap_err()
        .to_string();
    assert!(e.contains("nope") && e.contains("cannot open"), "{e}");
    let e = Dataset::open(d.path(), DatasetFormat::ImageFolder, 1 << 20)
        .unwrap_err()
        .to_string();
    assert!(e.contains("no class sub-folders"), "{e}");
    std::fs::create_dir(d.path().join("empty_class")).unwrap();
    let e = Dataset::open(d.path(), DatasetFormat::ImageFolder, 1 << 20)
        .unwrap_err()
        .to_string();
    assert!(e.contains("no samples"), "{e}");
    write(&d.path().join("garbage.tar"), &[0x55u8; 3000]);
    let e = Dataset::open(
        &d.path().join("garbage.tar"),
        DatasetFormat::WebDataset,
        1 << 20,
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("garbage.tar"), "{e}");
    let e = Dataset::open(
        &d.path().join("garbage.tar"),
        DatasetFormat::ImageFolder,
        1 << 20,
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("must be a directory"), "{e}");
}

#[test]
fn unreadable_and_oversize_files_fail_per_sample() {
    let d = tempfile::tempdir().unwrap();
    write(&d.path().join("c/big.jpg"), &[0u8; 100]);
    write(&d.path().join("c/small.jpg"), &[0u8; 10]);
    let ds = Dataset::open(d.path(), DatasetFormat::ImageFolder, 50).unwrap();
    assert!(matches!(
        ds.read(0),
        Err(SampleErrorKind::FileTooLarge {
            size: 100,
            limit: 50
        })
    ));
    assert!(ds.read(1).is_ok());
    std::fs::remove_file(d.path().join("c/small.jpg")).unwrap();
    assert!(matches!(ds.read(1), Err(SampleErrorKind::Read(_))));
}
