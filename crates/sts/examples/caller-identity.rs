//! E2E client: an unmodified AWS Rust SDK program. It loads credentials through aws-config's
//! default chain (env, web identity token file, container credentials, credential_process...)
//! and prints `GetCallerIdentity` as JSON. `--loop SECONDS` repeats it every second, exiting
//! non-zero on the first error.

use std::time::{Duration, Instant};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let args: Vec<String> = std::env::args().collect();
    let loop_for = match args.iter().position(|a| a == "--loop") {
        Some(i) => Duration::from_secs(args.get(i + 1).ok_or("--loop SECONDS")?.parse()?),
        None => Duration::ZERO,
    };
    let config = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    let client = aws_sdk_sts::Client::new(&config);
    let start = Instant::now();
    loop {
        let out = client.get_caller_identity().send().await?;
        println!(
            "{}",
            serde_json::json!({"Arn": out.arn(), "Account": out.account(), "UserId": out.user_id()})
        );
        if start.elapsed() >= loop_for {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}
