//! The AI-provider WebGroups catalog (`configs/webgroups/ai-providers.toml`): it loads through
//! the policy engine without errors or warnings, every provider group has patterns, `ai-all` is
//! exactly the union of the provider groups, no pattern covers a whole cloud, and real API
//! hostnames land in the right groups (and look-alikes in none).

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _};
use policy_engine::{compile, load_policy_str, normalize_name, LoadedPolicy, Query, Transport};

/// The provider groups the catalog must hold (besides `ai-all`).
const PROVIDERS: [&str; 17] = [
    "openai",
    "anthropic",
    "aws-bedrock",
    "azure-openai",
    "google-vertex-ai",
    "google-gemini",
    "mistral",
    "cohere",
    "groq",
    "together",
    "fireworks",
    "perplexity",
    "deepseek",
    "xai",
    "huggingface",
    "replicate",
    "openrouter",
];

/// Domains shared by every customer and service of a cloud: a pattern covering everything below
/// one of them would let a workload reach object storage and every other service there.
const SHARED_CLOUD_DOMAINS: [&str; 10] = [
    "amazonaws.com",
    "googleapis.com",
    "azure.com",
    "ai.azure.com",
    "windows.net",
    "azurewebsites.net",
    "cloudfront.net",
    "appspot.com",
    "huggingface.cloud",
    "huggingface.co",
];

fn configs_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs")
}

/// A policy that includes the catalog and nothing else, so that every WebGroup comes from it.
/// The policy text is anchored in `configs/`, so the include resolves like the example's.
fn load_catalog() -> anyhow::Result<LoadedPolicy> {
    let text = r#"
[policy]
default_action = "deny"
include = ["webgroups/ai-providers.toml"]

[[rules]]
name = "to-ai"
priority = 1
src = ["any"]
dst = ["ai-all"]
protocol = "tcp"
ports = ["443"]
action = "permit"
"#;
    let origin = configs_dir().join("catalog-test-policy.toml");
    load_policy_str(text, &origin).map_err(|e| anyhow::anyhow!("the catalog does not load:\n{e}"))
}

fn groups(loaded: &LoadedPolicy) -> BTreeMap<&str, Vec<&str>> {
    loaded
        .policy
        .webgroups
        .iter()
        .map(|g| {
            (
                g.name.as_str(),
                g.patterns.iter().map(|p| p.as_str()).collect(),
            )
        })
        .collect()
}

#[test]
fn catalog_loads_without_warnings() -> anyhow::Result<()> {
    let loaded = load_catalog()?;
    assert!(
        loaded.warnings.is_empty(),
        "warnings: {:?}",
        loaded.warnings
    );
    assert_eq!(loaded.files.len(), 2, "the policy and the catalog");
    Ok(())
}

#[test]
fn every_provider_has_a_group_with_patterns() -> anyhow::Result<()> {
    let loaded = load_catalog()?;
    let groups = groups(&loaded);
    let mut expected: BTreeSet<&str> = PROVIDERS.into_iter().collect();
    expected.insert("ai-all");
    let found: BTreeSet<&str> = groups.keys().copied().collect();
    assert_eq!(found, expected, "the catalog's WebGroups");
    for (name, patterns) in &groups {
        assert!(!patterns.is_empty(), "WebGroup {name} has no pattern");
        let unique: BTreeSet<&&str> = patterns.iter().collect();
        assert_eq!(
            unique.len(),
            patterns.len(),
            "WebGroup {name} repeats a pattern"
        );
    }
    Ok(())
}

#[test]
fn ai_all_is_exactly_the_union_of_the_provider_groups() -> anyhow::Result<()> {
    let loaded = load_catalog()?;
    let groups = groups(&loaded);
    let all: BTreeSet<&str> = groups["ai-all"].iter().copied().collect();
    let union: BTreeSet<&str> = groups
        .iter()
        .filter(|(name, _)| **name != "ai-all")
        .flat_map(|(_, patterns)| patterns.iter().copied())
        .collect();
    let missing: Vec<_> = union.difference(&all).collect();
    let extra: Vec<_> = all.difference(&union).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "ai-all lacks {missing:?} and has {extra:?} that no provider group has"
    );
    Ok(())
}

#[test]
fn no_pattern_covers_a_whole_cloud() -> anyhow::Result<()> {
    let loaded = load_catalog()?;
    for group in &loaded.policy.webgroups {
        for p in &group.patterns {
            let text = p.as_str();
            if p.is_any_depth() {
                let suffix = text.trim_start_matches("*.");
                assert!(
                    !SHARED_CLOUD_DOMAINS.contains(&suffix),
                    "{}: `{text}` covers every service below {suffix}",
                    group.name
                );
            }
            // A single-label wildcard must never be the first label: the service label in front
            // of it is what keeps the pattern to one service.
            if !p.is_any_depth() && !p.is_exact() {
                assert!(
                    !text.starts_with("*."),
                    "{}: `{text}` has no fixed first label",
                    group.name
                );
            }
        }
    }
    Ok(())
}

/// The WebGroups the compiled catalog reports for `name`, checked against the patterns' own
/// matcher so that both agree.
fn groups_of(name: &str) -> anyhow::Result<BTreeSet<String>> {
    let loaded = load_catalog()?;
    let table = compile(&loaded.policy, 1);
    let normal = normalize_name(name).with_context(|| format!("normalising {name}"))?;
    let src: IpAddr = "10.1.2.3".parse()?;
    let dst: IpAddr = "198.18.0.10".parse()?;
    let verdict = table.evaluate(&Query {
        src,
        dst,
        transport: Transport::Tcp,
        dst_port: 443,
        name: Some(&normal),
    });
    if !verdict.dst_groups_complete() {
        bail!("{name} reached too many pattern nodes to list its groups");
    }
    let compiled: BTreeSet<String> = table.dst_groups(&verdict).map(str::to_owned).collect();
    let by_pattern: BTreeSet<String> = loaded
        .policy
        .webgroups
        .iter()
        .filter(|g| g.patterns.iter().any(|p| p.matches(&normal)))
        .map(|g| g.name.clone())
        .collect();
    assert_eq!(
        compiled, by_pattern,
        "compiled table and patterns disagree on {name}"
    );
    Ok(compiled)
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

#[test]
fn real_api_hostnames_are_in_their_provider_group_and_in_ai_all() -> anyhow::Result<()> {
    let cases: [(&str, &str); 24] = [
        ("api.openai.com", "openai"),
        ("API.Anthropic.com.", "anthropic"),
        ("bedrock.us-east-1.amazonaws.com", "aws-bedrock"),
        ("bedrock-fips.us-west-2.amazonaws.com", "aws-bedrock"),
        ("bedrock-runtime.eu-central-1.amazonaws.com", "aws-bedrock"),
        (
            "bedrock-runtime-fips.us-gov-west-1.amazonaws.com",
            "aws-bedrock",
        ),
        ("bedrock-agent.ap-southeast-2.amazonaws.com", "aws-bedrock"),
        (
            "bedrock-agent-runtime.us-west-2.amazonaws.com",
            "aws-bedrock",
        ),
        ("contoso-prod.openai.azure.com", "azure-openai"),
        ("contoso-hub.services.ai.azure.com", "azure-openai"),
        ("contoso.cognitiveservices.azure.com", "azure-openai"),
        (
            "llama-3-70b-abcd.eastus2.models.ai.azure.com",
            "azure-openai",
        ),
        ("aiplatform.googleapis.com", "google-vertex-ai"),
        ("us-east5-aiplatform.googleapis.com", "google-vertex-ai"),
        ("europe-west4-aiplatform.googleapis.com", "google-vertex-ai"),
        ("generativelanguage.googleapis.com", "google-gemini"),
        ("codestral.mistral.ai", "mistral"),
        ("api.cohere.com", "cohere"),
        ("api.groq.com", "groq"),
        ("api.x.ai", "xai"),
        ("router.huggingface.co", "huggingface"),
        (
            "my-endpoint.us-east-1.aws.endpoints.huggingface.cloud",
            "huggingface",
        ),
        ("pbxt.replicate.delivery", "replicate"),
        ("openrouter.ai", "openrouter"),
    ];
    for (name, group) in cases {
        assert_eq!(groups_of(name)?, set(&[group, "ai-all"]), "{name}");
    }
    Ok(())
}

#[test]
fn look_alikes_and_other_cloud_services_match_nothing() -> anyhow::Result<()> {
    for name in [
        // Other services of the same clouds.
        "s3.us-east-1.amazonaws.com",
        "sts.us-east-1.amazonaws.com",
        "storage.googleapis.com",
        "oauth2.googleapis.com",
        "contoso.blob.core.windows.net",
        // The middle wildcard is exactly one label.
        "bedrock-runtime.amazonaws.com",
        "evil.bedrock-runtime.us-east-1.amazonaws.com",
        "bedrock-runtime.us-east-1.evil.amazonaws.com",
        // A suffix wildcard does not match the bare domain, nor a look-alike.
        "openai.azure.com",
        "contoso.openai.azure.com.evil.example",
        "api.openai.com.evil.example",
        "apiopenai.com",
        // Not API hosts.
        "chatgpt.com",
        "huggingface.co",
    ] {
        assert_eq!(groups_of(name)?, BTreeSet::new(), "{name}");
    }
    Ok(())
}
