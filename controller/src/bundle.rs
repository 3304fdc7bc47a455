//! Policy bundles: a policy file and the catalogs it includes, carried as text.
//!
//! `bulkheadctl push` bundles on the operator's machine ([`bundle_file`]) so the controller needs
//! no access to the operator's files; the controller validates a bundle with the very loader
//! `bulkhead check-policy` uses ([`load_bundle`]) by writing it into a private scratch directory,
//! and maps every diagnostic back to the operator's own paths so errors read exactly as
//! check-policy prints them. The watched policy file goes through the same two steps, so a
//! version's stored source is always a bundle, whatever its origin.
//!
//! Include paths must be relative (they are relative to the including file in the policy
//! language) and may only climb with leading `..` components; anything else could escape the
//! scratch directory and is refused with an error.

use std::path::{Component, Path, PathBuf};

use control_proto::v1::{BundledFile, PolicyBundle};
use policy_engine::load::{MAX_FILE_BYTES, MAX_INCLUDES};
use policy_engine::{load_policy_file, Policy};

/// Deepest leading `..` run accepted in an include path.
const MAX_PARENT_DEPTH: usize = 16;

/// A bundle that validated.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// The policy (selectors not yet resolved).
    pub policy: Policy,
    /// Warnings, as check-policy prints them.
    pub warnings: Vec<String>,
}

/// A bundle that did not: every error and warning, as check-policy prints them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    /// Every error.
    pub errors: Vec<String>,
    /// Warnings found on the way.
    pub warnings: Vec<String>,
}

/// Bundles a policy file and the includes named in its `[policy] include`. The policy is only
/// parsed far enough to find the includes: validation is the controller's, so a file with
/// syntax errors is still bundled and the controller reports the errors.
pub fn bundle_file(path: &Path) -> Result<PolicyBundle, String> {
    let text = read_bounded(path)?;
    let mut includes = Vec::new();
    let base = path.parent().unwrap_or(Path::new(""));
    for rel in include_list(&text).into_iter().take(MAX_INCLUDES) {
        // An unreadable include is left out; the controller then reports it as missing, with
        // its position, like check-policy would.
        if let Ok(include) = read_bounded(&base.join(&rel)) {
            includes.push(BundledFile {
                path: rel,
                text: include,
            });
        }
    }
    Ok(PolicyBundle {
        name: path.display().to_string(),
        text,
        includes,
    })
}

fn include_list(text: &str) -> Vec<String> {
    let Ok(table) = text.parse::<toml::Table>() else {
        return Vec::new();
    };
    let list = table
        .get("policy")
        .and_then(|p| p.get("include"))
        .and_then(|i| i.as_array());
    list.map(|items| {
        items
            .iter()
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect()
    })
    .unwrap_or_default()
}

/// A policy or catalog file: regular, at most [`MAX_FILE_BYTES`], opened without blocking.
fn read_bounded(path: &Path) -> Result<String, String> {
    policy_engine::file::read_regular_text(path, MAX_FILE_BYTES)
        .map_err(|e| format!("{}: cannot read: {e}", path.display()))
}

/// Leading `..` components of a safe include path, or why it is refused.
fn parent_depth(rel: &str) -> Result<usize, String> {
    let path = Path::new(rel);
    let mut depth = 0;
    let mut seen_normal = false;
    for component in path.components() {
        match component {
            Component::ParentDir if !seen_normal => depth += 1,
            Component::Normal(_) => seen_normal = true,
            Component::CurDir => {}
            _ => {
                return Err(format!(
                    "include `{rel}` cannot be bundled: use a relative path without `..` after a directory name"
                ))
            }
        }
    }
    if !seen_normal || depth > MAX_PARENT_DEPTH {
        return Err(format!("include `{rel}` cannot be bundled"));
    }
    Ok(depth)
}

/// Validates a bundle with the policy loader. `scratch` is a directory this call may create and
/// remove (the caller gives a unique one).
pub fn load_bundle(bundle: &PolicyBundle, scratch: &Path) -> Result<Loaded, Invalid> {
    let refuse = |errors: Vec<String>| Invalid {
        errors,
        warnings: Vec::new(),
    };
    if bundle.includes.len() > MAX_INCLUDES {
        return Err(refuse(vec![format!(
            "{}: more than {MAX_INCLUDES} includes",
            bundle.name
        )]));
    }
    let too_big = std::iter::once(&bundle.text)
        .chain(bundle.includes.iter().map(|f| &f.text))
        .any(|t| t.len() as u64 > MAX_FILE_BYTES);
    if too_big {
        return Err(refuse(vec![format!(
            "{}: a file is larger than {MAX_FILE_BYTES} bytes",
            bundle.name
        )]));
    }
    let mut depth = 0;
    let mut errors = Vec::new();
    for include in &bundle.includes {
        match parent_depth(&include.path) {
            Ok(d) => depth = depth.max(d),
            Err(e) => errors.push(format!("{}: {e}", bundle.name)),
        }
    }
    if !errors.is_empty() {
        return Err(refuse(errors));
    }
    let result = materialize_and_load(bundle, scratch, depth);
    let _ = std::fs::remove_dir_all(scratch);
    result
}

fn materialize_and_load(
    bundle: &PolicyBundle,
    scratch: &Path,
    depth: usize,
) -> Result<Loaded, Invalid> {
    let io_error = |e: std::io::Error| Invalid {
        errors: vec![format!("controller: cannot stage the policy: {e}")],
        warnings: Vec::new(),
    };
    let mut main_dir = scratch.join("root");
    for _ in 0..depth {
        main_dir.push("d");
    }
    std::fs::create_dir_all(&main_dir).map_err(io_error)?;
    let main = main_dir.join("policy.toml");
    std::fs::write(&main, &bundle.text).map_err(io_error)?;
    for include in &bundle.includes {
        let target = main_dir.join(&include.path);
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent).map_err(io_error)?;
        }
        std::fs::write(&target, &include.text).map_err(io_error)?;
    }
    let mapper = PathMapper {
        main: main.clone(),
        main_dir: main_dir.clone(),
        name: PathBuf::from(&bundle.name),
    };
    match load_policy_file(&main) {
        Ok(loaded) => Ok(Loaded {
            policy: loaded.policy,
            warnings: loaded.warnings.iter().map(|d| mapper.show(d)).collect(),
        }),
        Err(e) => Err(Invalid {
            errors: e.errors.iter().map(|d| mapper.show(d)).collect(),
            warnings: e.warnings.iter().map(|d| mapper.show(d)).collect(),
        }),
    }
}

/// Maps scratch paths in diagnostics back to the operator's paths.
struct PathMapper {
    main: PathBuf,
    main_dir: PathBuf,
    name: PathBuf,
}

impl PathMapper {
    fn show(&self, diagnostic: &policy_engine::Diagnostic) -> String {
        let mut d = diagnostic.clone();
        let base = self.name.parent().unwrap_or(Path::new(""));
        if d.file == self.main {
            d.file = self.name.clone();
        } else if let Ok(rel) = d.file.strip_prefix(&self.main_dir) {
            d.file = base.join(rel);
        }
        d.message = d.message.replace(
            &self.main.display().to_string(),
            &self.name.display().to_string(),
        );
        let scratch_prefix = format!("{}/", self.main_dir.display());
        let base_prefix = if base.as_os_str().is_empty() {
            String::new()
        } else {
            format!("{}/", base.display())
        };
        d.message = d.message.replace(&scratch_prefix, &base_prefix);
        d.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn include_paths_that_could_escape_are_refused() {
        assert_eq!(parent_depth("webgroups/ai.toml"), Ok(0));
        assert_eq!(parent_depth("../../webgroups/ai.toml"), Ok(2));
        assert!(parent_depth("/etc/passwd").is_err());
        assert!(parent_depth("a/../../b").is_err());
        assert!(parent_depth("..").is_err());
    }

    #[test]
    fn bundles_validate_like_check_policy_with_the_operators_paths() {
        let dir = tempfile::tempdir().unwrap();
        let policies = dir.path().join("policies");
        std::fs::create_dir_all(policies.join("cat")).unwrap();
        std::fs::create_dir_all(dir.path().join("shared")).unwrap();
        std::fs::write(
            dir.path().join("shared/web.toml"),
            "[webgroups.openai]\ndomains = [\"api.openai.com\"]\n",
        )
        .unwrap();
        let policy = policies.join("p.toml");
        std::fs::write(
            &policy,
            "[policy]\ndefault_action = \"deny\"\ninclude = [\"../shared/web.toml\"]\n\
             [[rules]]\nname = \"r\"\npriority = 1\nsrc = \"any\"\ndst = [\"openai\"]\naction = \"permit\"\n",
        )
        .unwrap();
        let bundle = bundle_file(&policy).unwrap();
        assert_eq!(bundle.includes.len(), 1);
        let loaded = load_bundle(&bundle, &dir.path().join("scratch1")).unwrap();
        assert_eq!(loaded.policy.webgroups[0].name, "openai");
        assert!(!dir.path().join("scratch1").exists());

        std::fs::write(
            &policy,
            "[policy]\ndefault_action = \"deny\"\ninclude = [\"missing.toml\"]\n\
             [[rules]]\nname = \"r\"\npriority = 1\nsrc = \"any\"\ndst = [\"nowhere\"]\naction = \"permit\"\n",
        )
        .unwrap();
        let bundle = bundle_file(&policy).unwrap();
        let invalid = load_bundle(&bundle, &dir.path().join("scratch2")).unwrap_err();
        let expected = policy_engine::load_policy_file(&policy).unwrap_err();
        let expected: Vec<String> = expected.errors.iter().map(ToString::to_string).collect();
        assert_eq!(invalid.errors, expected);
    }
}
