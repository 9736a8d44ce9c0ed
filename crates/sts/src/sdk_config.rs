//! Loading the AWS SDK's configuration for the STS client, and refusing at start what would
//! otherwise fail in every call or panic: aws-config panics on a bad `AWS_MAX_ATTEMPTS` or
//! `AWS_RETRY_MODE`, and the SDK on an empty endpoint override.

use aws_runtime::env_config::EnvConfigValue;
use aws_types::os_shim_internal::{Env, Fs};

/// aws-config's default chain with an optional region override, its retry settings checked
/// first with the SDK's own lookup (environment, then the selected profile).
pub async fn load(region: Option<String>) -> Result<aws_types::SdkConfig, StsSetupError> {
    check_retry_settings(&Env::real(), &Fs::real()).await?;
    let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest());
    if let Some(region) = region {
        loader = loader.region(aws_config::Region::new(region));
    }
    Ok(loader.load().await)
}

/// The STS client for the loaded configuration, and where its calls go (scheme://host[:port],
/// for logs). The region and any endpoint override are checked, and the endpoint resolved by the
/// SDK's own rules, so a configuration that cannot work fails here, not in each call.
pub async fn sts_client(
    sdk: &aws_types::SdkConfig,
) -> Result<(aws_sdk_sts::Client, String), StsSetupError> {
    use aws_sdk_sts::config::endpoint::{DefaultResolver, Params, ResolveEndpoint};
    let region = sdk.region().ok_or(StsSetupError::NoRegion)?.to_string();
    let endpoint = sts_endpoint_override(sdk)?;
    let params = Params::builder()
        .region(region.clone())
        .set_endpoint(endpoint.clone())
        .set_use_fips(sdk.use_fips())
        .set_use_dual_stack(sdk.use_dual_stack())
        .build()
        .map_err(|e| StsSetupError::BadRegion {
            region,
            reason: e.to_string(),
        })?;
    let resolved = DefaultResolver::new()
        .resolve_endpoint(&params)
        .await
        .map_err(|e| StsSetupError::Unresolvable(e.to_string()))?;
    // The checked value is the one used, whatever the SDK would have looked up itself.
    let mut conf = aws_sdk_sts::config::Builder::from(sdk);
    conf.set_endpoint_url(endpoint);
    Ok((
        aws_sdk_sts::Client::from_conf(conf.build()),
        endpoint_for_logs(resolved.url()),
    ))
}

/// The checks `aws_config`'s retry provider makes, as errors instead of its panic.
async fn check_retry_settings(env: &Env, fs: &Fs) -> Result<(), StsSetupError> {
    // A profile file that cannot be read is aws-config's to report; it does so as a warning.
    let profiles = aws_config::profile::load(fs, env, &Default::default(), None)
        .await
        .ok();
    let retry = |e: &dyn std::fmt::Display| StsSetupError::Retry(e.to_string());
    EnvConfigValue::new()
        .env("AWS_MAX_ATTEMPTS")
        .profile("max_attempts")
        .validate(env, profiles.as_ref(), |v| match v.parse::<u32>() {
            Ok(0) => Err(RetrySettingError("max attempts must be 1 or more".into())),
            Ok(n) => Ok(n),
            Err(_) => Err(RetrySettingError(format!(
                "max attempts {v:?} is not a whole number"
            ))),
        })
        .map_err(|e| retry(&e))?;
    EnvConfigValue::new()
        .env("AWS_RETRY_MODE")
        .profile("retry_mode")
        .validate(env, profiles.as_ref(), |v| {
            v.parse::<aws_config::retry::RetryMode>().map_err(|_| {
                RetrySettingError(format!(
                    "retry mode {v:?} is not one aws-config knows (standard, adaptive)"
                ))
            })
        })
        .map_err(|e| retry(&e))?;
    Ok(())
}

/// Why a retry setting is refused.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct RetrySettingError(String);

/// The AWS configuration cannot reach STS: found at start rather than in every call.
#[derive(Debug, thiserror::Error)]
pub enum StsSetupError {
    /// A retry setting aws-config would panic on (it checks them with a panic, by design).
    #[error("{0}")]
    Retry(String),
    /// No region anywhere in the configuration.
    #[error("no AWS region: set AWS_REGION")]
    NoRegion,
    /// A region the SDK's endpoint rules refuse (every call would fail).
    #[error("AWS region {region:?} is not usable: {reason}")]
    BadRegion {
        /// The value.
        region: String,
        /// The SDK's reason.
        reason: String,
    },
    /// Set to nothing: the SDK would panic on every call (aws-smithy-types asserts on it).
    #[error(
        "{source_name} is set but empty: unset it to use the region's STS endpoint, or give a URL"
    )]
    EmptyEndpoint {
        /// Where the value came from.
        source_name: String,
    },
    /// Not an absolute http(s) URL: every call would fail.
    #[error("{source_name} {url:?} is not an http:// or https:// URL with a host")]
    NotAUrl {
        /// Where the value came from.
        source_name: String,
        /// The value.
        url: String,
    },
    /// The SDK's endpoint rules give no endpoint for this configuration.
    #[error("no STS endpoint for this configuration: {0}")]
    Unresolvable(String),
}

/// The STS endpoint override the SDK would use, checked: `AWS_ENDPOINT_URL_STS`, then
/// `AWS_ENDPOINT_URL`, then `endpoint_url` in the AWS config file (for STS, then global).
/// `None` is the region's own endpoint.
fn sts_endpoint_override(sdk: &aws_types::SdkConfig) -> Result<Option<String>, StsSetupError> {
    // The same lookup as `aws_sdk_sts::config::Builder::from(&SdkConfig)`.
    let url = if sdk.get_origin("endpoint_url").is_client_config() {
        sdk.endpoint_url().map(str::to_owned)
    } else {
        let key = aws_types::service_config::ServiceConfigKey::builder()
            .service_id("STS")
            .env("AWS_ENDPOINT_URL")
            .profile("endpoint_url")
            .build()
            .ok();
        sdk.service_config()
            .zip(key)
            .and_then(|(conf, key)| conf.load_config(key))
            .or_else(|| sdk.endpoint_url().map(str::to_owned))
    };
    let Some(url) = url else { return Ok(None) };
    let source_name = endpoint_source();
    if url.trim().is_empty() {
        return Err(StsSetupError::EmptyEndpoint { source_name });
    }
    match url.parse::<http::Uri>() {
        Ok(u)
            if matches!(u.scheme_str(), Some("http" | "https"))
                && u.host().is_some_and(|h| !h.is_empty()) =>
        {
            Ok(Some(url))
        }
        _ => Err(StsSetupError::NotAUrl { source_name, url }),
    }
}

/// An endpoint URL fit for logs: scheme, host and port, without any user-info.
fn endpoint_for_logs(url: &str) -> String {
    match url.parse::<http::Uri>() {
        Ok(u) => match (u.scheme_str(), u.host(), u.port_u16()) {
            (Some(s), Some(h), Some(p)) => format!("{s}://{h}:{p}"),
            (Some(s), Some(h), None) => format!("{s}://{h}"),
            _ => "(unprintable)".into(),
        },
        Err(_) => "(unprintable)".into(),
    }
}

/// Which setting an endpoint override most likely came from, to name it in errors.
fn endpoint_source() -> String {
    let set = |name| std::env::var_os(name).is_some();
    if set("AWS_ENDPOINT_URL_STS") {
        "AWS_ENDPOINT_URL_STS".into()
    } else if set("AWS_ENDPOINT_URL") {
        "AWS_ENDPOINT_URL".into()
    } else {
        // The SDK's profile selection: AWS_PROFILE, else `default`.
        let profile = std::env::var("AWS_PROFILE")
            .ok()
            .filter(|p| !p.is_empty())
            .unwrap_or_else(|| "default".into());
        format!(
            "endpoint_url of profile {profile:?} (or its services section) in the AWS config file"
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_are_logged_without_user_info_or_path() {
        for (url, logged) in [
            (
                "http://moto.aws-standin.svc:5000",
                "http://moto.aws-standin.svc:5000",
            ),
            (
                "https://user:secret@sts.example/x?y=1",
                "https://sts.example",
            ),
            (
                "https://sts.us-east-1.amazonaws.com/",
                "https://sts.us-east-1.amazonaws.com",
            ),
            ("not a url", "(unprintable)"),
        ] {
            assert_eq!(endpoint_for_logs(url), logged, "{url}");
        }
    }
}
