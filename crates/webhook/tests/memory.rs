//! Memory of one admission: the heap `review` uses at its peak, against the body's size, for
//! bodies shaped to make decoding and patching allocate the most per byte (thousands of the
//! smallest list items the webhook reads or patches).
//!
//! The server charges each admission in flight a multiple of its body plus a constant
//! (`admission_charge`) against its memory budget; this test is what keeps those numbers honest
//! when a field is added to the decoded view or to the patch. Heap sizes do not depend on timing
//! or the build profile.

use std::sync::Mutex;

use peak_alloc::PeakAlloc;
use serde_json::{Value, json};
use tokenvend_testkit::admission_review;
use tokenvend_webhook::admission::review;
use tokenvend_webhook::budget::{BODY_COPIES, admission_charge};
use tokenvend_webhook::config::Config;
use tokenvend_webhook::mutate::Injector;
use tokenvend_webhook::server::MAX_BODY_BYTES;

#[global_allocator]
static ALLOCATOR: PeakAlloc = PeakAlloc;

/// One measurement at a time: the counters are process-wide.
static MEASURING: Mutex<()> = Mutex::new(());

/// Peak heap above what was in use before, while `review` answers `body`; and the answer.
fn peak_of_review(body: &[u8], injector: &Injector) -> (usize, String) {
    let _one = MEASURING.lock().unwrap_or_else(|p| p.into_inner());
    let before = ALLOCATOR.current_usage();
    ALLOCATOR.reset_peak_usage();
    let answer = review(body, injector);
    let peak = ALLOCATOR.peak_usage() - before;
    let answer = match answer {
        Ok(r) => String::from_utf8_lossy(&r.body).into_owned(),
        Err(e) => format!("error: {e}"),
    };
    (peak, answer)
}

/// A review of a labelled pod whose JSON text has `hole` where the shape's list goes.
fn review_around(hole: &str) -> String {
    let pod = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"generateName": "orders-", "namespace": "shop",
                     "labels": {"tremolo.io/aws-role": "true"},
                     "annotations": {"tremolo.io/aws-role": "arn:aws:iam::123456789012:role/orders",
                                     "tremolo.io/aws-mode": "credentials"}},
        "spec": {"containers": [{"name": "app", "image": "app:1", "env": [{"name": "X", "value": "1"}]}],
                 "nodeSelector": {}, "affinity": {}}
    });
    let review = admission_review("705ab4f5-6393-11e8-b7cc-42010a800002", "shop", pod).to_string();
    // Each hole is a unique spot of the compact JSON text.
    let (spot, fill) = match hole {
        "labels" => (r#""labels":{"#, r#""labels":{@,"#),
        "annotations" => (r#""annotations":{"#, r#""annotations":{@,"#),
        "node selector" => (r#""nodeSelector":{}"#, r#""nodeSelector":{@}"#),
        "spec" => (r#""spec":{"#, r#""spec":{@,"#),
        "containers" => (r#""containers":["#, r#""containers":[@,"#),
        "container" => (r#""name":"app""#, r#""name":"app",@"#),
        "affinity" => (r#""affinity":{}"#, r#""affinity":{@}"#),
        "env" => (r#""env":["#, r#""env":[@,"#),
        other => panic!("no hole {other}"),
    };
    assert!(review.contains(spot), "{spot} not in {review}");
    review.replacen(spot, fill, 1)
}

/// The body of `shape` with as many items as fit in `limit` bytes, or, when `unlucky`, with one
/// more than a power of two of them: a list that has just doubled its buffer, briefly holding
/// the old one too, is at its largest per item.
fn body_of(shape: &Shape, limit: usize, unlucky: bool) -> Vec<u8> {
    let around = review_around(shape.hole);
    let room = limit - (around.len() - 1 + shape.open.len() + shape.close.len());
    let item = |i: usize| shape.item.replace("{i}", &format!("{i:x}"));
    // Items are separated by commas.
    let mut fit = 0;
    let mut used = 0;
    while used + usize::from(fit > 0) + item(fit).len() <= room {
        used += usize::from(fit > 0) + item(fit).len();
        fit += 1;
    }
    let count = if unlucky && fit > 2 {
        (fit - 1).next_power_of_two() / 2 + 1
    } else {
        fit
    };
    let items: Vec<String> = (0..count).map(item).collect();
    let list = format!("{}{}{}", shape.open, items.join(","), shape.close);
    let body = around.replacen('@', &list, 1);
    assert!(body.len() <= limit, "{} bytes", body.len());
    let _: Value = serde_json::from_str(&body).expect("the body is JSON");
    body.into_bytes()
}

/// Many copies of the smallest item of one list the webhook reads or patches.
struct Shape {
    name: &'static str,
    /// Where the list goes (see [`review_around`]).
    hole: &'static str,
    open: &'static str,
    item: &'static str,
    close: &'static str,
}

const fn shape(
    name: &'static str,
    hole: &'static str,
    open: &'static str,
    item: &'static str,
    close: &'static str,
) -> Shape {
    Shape {
        name,
        hole,
        open,
        item,
        close,
    }
}

/// Bodies that make the webhook allocate the most per byte.
const SHAPES: &[Shape] = &[
    shape("containers", "containers", "", r#"{"name":"{i}"}"#, ""),
    shape(
        "init containers",
        "spec",
        r#""initContainers":["#,
        r#"{"name":"{i}"}"#,
        "]",
    ),
    shape(
        "native sidecars",
        "spec",
        r#""initContainers":["#,
        r#"{"name":"{i}","restartPolicy":"Always"}"#,
        "]",
    ),
    shape(
        "containers warned about",
        "containers",
        "",
        r#"{"name":"{i}","env":[{"name":"AWS_PROFILE"}]}"#,
        "",
    ),
    shape(
        "containers refused",
        "containers",
        "",
        r#"{"name":"{i}","ports":[{"containerPort":9911}]}"#,
        "",
    ),
    shape("env values", "env", "", r#"{"name":"A","value":""}"#, ""),
    shape(
        "env sources",
        "env",
        "",
        r#"{"name":"A","valueFrom":{}}"#,
        "",
    ),
    shape("envFrom", "container", r#""envFrom":["#, "{}", "]"),
    shape("command", "container", r#""command":["#, r#""""#, "]"),
    shape(
        "native sidecar commands",
        "spec",
        r#""initContainers":["#,
        r#"{"name":"{i}","restartPolicy":"Always","command":["tokenvend-sidecar"]}"#,
        "]",
    ),
    shape(
        "escaped strings",
        "container",
        r#""command":["#,
        r#""\n""#,
        "]",
    ),
    shape(
        "volume mounts",
        "container",
        r#""volumeMounts":["#,
        r#"{"name":"","mountPath":""}"#,
        "]",
    ),
    shape(
        "ports",
        "container",
        r#""ports":["#,
        r#"{"containerPort":1}"#,
        "]",
    ),
    shape("volumes", "spec", r#""volumes":["#, r#"{"name":""}"#, "]"),
    shape(
        "ephemeral containers",
        "spec",
        r#""ephemeralContainers":["#,
        "{}",
        "]",
    ),
    shape("labels", "labels", "", r#""{i}":"""#, ""),
    shape("annotations", "annotations", "", r#""{i}":"""#, ""),
    shape("node selector", "node selector", "", r#""{i}":"""#, ""),
    shape(
        "node affinity terms",
        "affinity",
        r#""nodeAffinity":{"requiredDuringSchedulingIgnoredDuringExecution":{"nodeSelectorTerms":["#,
        "{}",
        "]}}",
    ),
    shape(
        "affinity values",
        "affinity",
        r#""nodeAffinity":{"requiredDuringSchedulingIgnoredDuringExecution":{"nodeSelectorTerms":[{"matchExpressions":[{"key":"k","operator":"In","values":["#,
        r#""""#,
        "]}]}]}}",
    ),
    shape(
        "one large annotation",
        "annotations",
        r#""big":""#,
        "xxxxxxxxxxxxxxxx",
        r#"""#,
    ),
];

#[test]
fn an_admission_never_takes_more_heap_than_its_charge() {
    let injector = Injector::new(Config::default()).expect("default config renders");
    let mut over = Vec::new();
    let sizes = [16 * 1024, 256 * 1024, MAX_BODY_BYTES];
    for (limit, unlucky) in sizes.into_iter().flat_map(|l| [(l, false), (l, true)]) {
        for shape in SHAPES {
            let body = body_of(shape, limit, unlucky);
            let (peak, answer) = peak_of_review(&body, &injector);
            // The body is already read here: its own copies are not part of this peak.
            let charge = admission_charge(body.len()) - BODY_COPIES * body.len();
            println!(
                "{:>24}: {:>9} bytes, peak heap {peak:>10}, {:>3} % of its charge",
                shape.name,
                body.len(),
                peak * 100 / charge
            );
            // Measured through the mutation: the pod decoded, and opted in.
            assert!(
                answer.contains(r#""allowed":true,"patch""#)
                    || answer.contains("the patch for this pod would pass")
                    || (shape.name == "containers refused" && answer.contains("declares port")),
                "{}: {}",
                shape.name,
                &answer[..answer.len().min(300)]
            );
            if peak > charge {
                over.push(format!(
                    "{} ({} bytes): {peak} > {charge}",
                    shape.name,
                    body.len()
                ));
            }
        }
    }
    assert!(over.is_empty(), "heap above the charge: {over:#?}");
}
