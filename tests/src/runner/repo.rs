//! Local git repositories for fixtures: the emulated GitLab's `git_info.repo_url` points at
//! one, so get_sources really clones and checks out a commit.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::fixture::{Source, is_safe_relative_path};
use crate::error::{Error, Result};

/// A repository the job can fetch.
#[derive(Debug, Clone)]
pub(crate) struct FixtureRepo {
    /// Path used as the clone URL.
    pub(crate) url: PathBuf,
    /// The commit the job checks out.
    pub(crate) sha: String,
}

/// Runs git with a fixed identity and dates so fixture commits are reproducible and do not
/// depend on the user's git configuration.
fn git(dir: &Path, args: &[&str]) -> Result<String> {
    let output = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args([
            "-c",
            "user.name=Fixture",
            "-c",
            "user.email=fixture@example.com",
        ])
        .args([
            "-c",
            "commit.gpgsign=false",
            "-c",
            "core.hooksPath=/dev/null",
        ])
        .args(args)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_AUTHOR_DATE", "2024-01-01T00:00:00Z")
        .env("GIT_COMMITTER_DATE", "2024-01-01T00:00:00Z")
        .output()
        .map_err(|e| Error::Git {
            args: args.join(" "),
            message: e.to_string(),
        })?;
    if !output.status.success() {
        return Err(Error::Git {
            args: args.join(" "),
            message: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        });
    }
    Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
}

/// Makes (or reuses) the repository for `source` under `dest`, with `branch` pointing at the
/// commit.
pub(crate) fn prepare(source: &Source, branch: &str, dest: &Path) -> Result<FixtureRepo> {
    match source {
        Source::Files(files) => {
            std::fs::create_dir_all(dest)
                .map_err(|e| Error::io(format!("creating {}", dest.display()), e))?;
            for (path, content) in files {
                if !is_safe_relative_path(path) {
                    return Err(Error::Config(format!(
                        "source path {path:?} escapes the repo"
                    )));
                }
                write_file(&dest.join(path), content)?;
            }
            commit_all(dest, branch)
        }
        Source::Dir(dir) => {
            if dir.join(".git").exists() {
                let sha = git(dir, &["rev-parse", "HEAD"])?;
                return Ok(FixtureRepo {
                    url: dir.clone(),
                    sha,
                });
            }
            copy_tree(dir, dest)?;
            commit_all(dest, branch)
        }
    }
}

fn commit_all(dir: &Path, branch: &str) -> Result<FixtureRepo> {
    git(dir, &["init", "-q", "-b", branch])?;
    git(dir, &["add", "-A"])?;
    git(
        dir,
        &["commit", "-q", "--allow-empty", "-m", "fixture commit"],
    )?;
    let sha = git(dir, &["rev-parse", "HEAD"])?;
    Ok(FixtureRepo {
        url: dir.to_path_buf(),
        sha,
    })
}

pub(crate) fn write_file(path: &Path, content: &str) -> Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .map_err(|e| Error::io(format!("creating {}", parent.display()), e))?;
    }
    std::fs::write(path, content).map_err(|e| Error::io(format!("writing {}", path.display()), e))
}

fn copy_tree(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to).map_err(|e| Error::io(format!("creating {}", to.display()), e))?;
    let entries =
        std::fs::read_dir(from).map_err(|e| Error::io(format!("reading {}", from.display()), e))?;
    for entry in entries {
        let entry = entry.map_err(|e| Error::io(format!("reading {}", from.display()), e))?;
        let src: PathBuf = entry.path();
        let dst = to.join(entry.file_name());
        let kind = entry
            .file_type()
            .map_err(|e| Error::io(format!("stat {}", src.display()), e))?;
        if kind.is_dir() {
            copy_tree(&src, &dst)?;
        } else if kind.is_symlink() {
            let target = std::fs::read_link(&src)
                .map_err(|e| Error::io(format!("reading link {}", src.display()), e))?;
            std::os::unix::fs::symlink(&target, &dst)
                .map_err(|e| Error::io(format!("linking {}", dst.display()), e))?;
        } else {
            // fs::copy keeps the permission bits, so executable scripts stay executable.
            std::fs::copy(&src, &dst)
                .map_err(|e| Error::io(format!("copying {}", src.display()), e))?;
        }
    }
    Ok(())
}
