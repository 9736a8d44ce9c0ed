//! `image::reference_problem` against the kubelet's own verdict (`oracles/kubelet_image.rs`): any
//! reference the kubelet refuses leaves the pod in `InvalidImageName`, so the property asks of
//! any string whether the webhook accepts exactly what the kubelet accepts.

#[path = "oracles/kubelet_image.rs"]
mod kubelet_image;

use kubelet_image::Kubelet;
use proptest::prelude::*;
use tokenvend_testkit::{agreed, fuzz, mangled};

#[test]
fn the_oracle_gives_the_kubelets_verdicts() {
    // Cases from distribution/reference's and go-digest's own test tables and behaviour, so the
    // property below compares against the real contract, not against a second guess.
    let kubelet = Kubelet::compile();
    let hex64 = "0123456789abcdef".repeat(4);
    for image in [
        "ubuntu".to_owned(),
        "library/ubuntu:22.04".to_owned(),
        "docker.io/library/ubuntu".to_owned(),
        "index.docker.io/ubuntu".to_owned(),
        "localhost/app".to_owned(),
        "localhost:5000/app:v1".to_owned(),
        "Registry.Example.com/app".to_owned(),
        "[fd00::1]:5000/app".to_owned(),
        "[::1]/app".to_owned(),
        "example.com:5000".to_owned(), // a name and the tag "5000"
        "a/b__c/d---e/f.g".to_owned(),
        format!("app@sha256:{hex64}"),
        format!("app:v1@sha256:{hex64}"),
        format!("{hex64}:tag"),
        format!("docker.io/{}", "a".repeat(247)),
        format!("registry.example.com/{}", "a".repeat(255)),
    ] {
        assert!(kubelet.accepts(&image), "{image}");
    }
    for image in [
        String::new(),
        "Ubuntu".to_owned(),
        "example.com/App".to_owned(),
        "app:".to_owned(),
        "app:.tag".to_owned(),
        "a//b".to_owned(),
        "-a/b".to_owned(),
        "a_-b".to_owned(),
        "a___b".to_owned(),
        "https://example.com/app".to_owned(),
        "[fd00::1.2.3.4]/app".to_owned(),
        "[fe80::1%eth0]/app".to_owned(),
        hex64.clone(),
        format!("app@sha256:{}", hex64.to_uppercase()),
        format!("app@sha256:{}", &hex64[1..]),
        format!("app@md5:{hex64}"),
        format!("app@SHA256:{hex64}"),
        format!("docker.io/{}", "a".repeat(248)), // "library/" makes the path 256
        format!("registry.example.com/{}", "a".repeat(256)),
        "app:t\u{e9}".to_owned(),
        "app\n".to_owned(),
    ] {
        assert!(!kubelet.accepts(&image), "{image:?}");
    }
}

#[test]
fn fuzz_image_references_match_the_kubelet() {
    // References built from the grammar with the edges the kubelet draws (Docker Hub names,
    // bracketed hosts, digests in either case, 64-hex names), then up to three characters
    // inserted, replaced or removed; and text from the grammar's alphabet.
    let kubelet = Kubelet::compile();
    let registry = prop_oneof![
        Just(String::new()),
        Just("localhost/".to_owned()),
        Just("docker.io/".to_owned()),
        Just("index.docker.io/".to_owned()),
        "[A-Za-z0-9]([A-Za-z0-9_-]{0,5}[A-Za-z0-9])?(\\.[a-zA-Z0-9-]{1,6}){0,2}(:[0-9]{0,5})?/",
        "\\[[0-9a-fA-F:.%]{1,16}\\](:[0-9]{1,4})?/",
        prop::sample::select(vec![
            "[::1]/",
            "[1:2:3:4:5:6:7:8]:5000/",
            "[::ffff:10.0.0.1]/",
            "[::ffff:10.0.0.1]:5000/",
            "[fe80::1%eth0]/",
            "[:::]/",
        ])
        .prop_map(str::to_owned),
    ];
    let path = "[a-z0-9]{1,6}((\\.|_|__|-{1,3})[a-zA-Z0-9]{1,6}){0,2}(/[a-z0-9]{1,6}((\\.|_|-)[a-z0-9]{1,4}){0,2}){0,3}";
    let tag = "(:[A-Za-z0-9_.-]{0,12})?";
    let digest = prop_oneof![
        Just(String::new()),
        "@sha(256|384|512):[0-9a-f]{64}([0-9a-f]{32}){0,2}",
        "@(sha256|SHA256|md5|sha2-x):[0-9a-fA-F]{62,66}",
    ];
    let built = (registry, path, tag, digest)
        .prop_map(|(registry, path, tag, digest)| format!("{registry}{path}{tag}{digest}"));
    let edited = mangled(built, ":/@._-[]Aa0f%", 3);
    let long = ("(docker\\.io/|registry\\.example\\.com/)?", 240..270usize)
        .prop_map(|(registry, len)| format!("{registry}{}:1", "a".repeat(len)));
    let images = prop_oneof![
        6 => edited,
        1 => "[0-9a-f]{64}(:[a-z]{1,3})?",
        1 => long,
        2 => "[a-zA-Z0-9:/@._\\[\\]-]{0,40}",
    ];
    fuzz("image-reference", images, |image| {
        agreed(kubelet.disagreement(&image))?;
        Ok(())
    });
}
