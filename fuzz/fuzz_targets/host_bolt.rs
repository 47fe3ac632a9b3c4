#![no_main]
//! containerd's metadata database as bolt.rs reads it: any bytes are parsed
//! as a bbolt file, and when they parse, the lookups containerd.rs makes
//! (a container's image, the image's digest) and a few others are asked.
//! None may panic; an answer is always a slice of the input, and an image
//! found is text fit to print (UTF-8, no control characters) with a digest
//! of `algorithm:encoded` form or none.

use libfuzzer_sys::fuzz_target;
use perimeter_host::containers::{Bolt, image_from_metadata};

fuzz_target!(|bytes: &[u8]| {
    let Ok(bolt) = Bolt::parse(bytes) else {
        return;
    };
    let _ = bolt.same_metas(bytes);
    let range = bytes.as_ptr_range();
    for (buckets, key) in [
        (&[&b"v1"[..]][..], &b"version"[..]),
        (
            &[&b"v1"[..], b"default", b"containers", b"web"][..],
            b"image",
        ),
        (&[][..], b"v1"),
        (&[&b""[..], b"", b""][..], b""),
    ] {
        if let Ok(Some(value)) = bolt.get(buckets, key) {
            let inside = value.is_empty()
                || (range.contains(&value.as_ptr()) && value.as_ptr_range().end <= range.end);
            assert!(inside, "a value outside the file");
        }
    }
    for (namespace, id) in [("default", "web"), ("k8s.io", ""), ("", "")] {
        if let Ok(Some((image, digest))) = image_from_metadata(&bolt, namespace, id) {
            assert!(
                !image.is_empty() && !image.chars().any(char::is_control),
                "{image:?}"
            );
            if let Some(digest) = digest {
                assert!(
                    digest
                        .split_once(':')
                        .is_some_and(|(a, e)| !a.is_empty() && !e.is_empty()),
                    "{digest:?}"
                );
            }
        }
    }
});
