//! Criterion benchmarks: the pure mutation of a realistic 3-container pod, and a whole
//! AdmissionReview (parse, mutate, serialize) for the same pod.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use k8s_openapi::api::core::v1::Pod;
use serde::Deserialize;
use serde_json::Value;
use tokenvend_testkit::admission_review;
use tokenvend_webhook::admission::review;
use tokenvend_webhook::config::Config;
use tokenvend_webhook::mutate::{Injector, mutate};
use tokenvend_webhook::pod::PodView;

fn fixture() -> Value {
    let text = include_str!("pod-3-containers.yaml");
    serde_yaml_ng::from_str(text).expect("fixture parses")
}

fn bench(c: &mut Criterion) {
    let pod_json = fixture();
    let _: Pod = serde_json::from_value(pod_json.clone()).expect("fixture is a Pod");
    let pod = PodView::deserialize(&pod_json).expect("fixture decodes");
    let cfg = Config::default();
    assert_eq!(pod.spec.as_ref().map(|s| s.containers.len()), Some(3));
    assert!(!mutate(&pod, &cfg).expect("patched").patch.is_empty());
    let injector = Injector::new(cfg.clone()).expect("renders");
    c.bench_function("mutate/3-container-pod", |b| {
        b.iter(|| injector.mutate(black_box(&pod)))
    });
    let body = admission_review(
        "705ab4f5-6393-11e8-b7cc-42010a800002",
        "shop",
        pod_json.clone(),
    )
    .to_string()
    .into_bytes();
    let object = pod_json.to_string();
    c.bench_function("decode/k8s-openapi-pod", |b| {
        b.iter(|| serde_json::from_str::<Pod>(black_box(&object)))
    });
    c.bench_function("decode/pod-view", |b| {
        b.iter(|| serde_json::from_str::<PodView>(black_box(&object)))
    });
    c.bench_function("review/3-container-pod", |b| {
        b.iter(|| review(black_box(&body), black_box(&injector)))
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
