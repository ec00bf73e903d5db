//! The files of one run: the user's argon2id hash, the policy, the daemon's config and the
//! flood's wrk scripts.

use super::*;
use crate::gateway_bench::{LOOPBACK, RUN_AS, UPSTREAM_PORT, write_readable};
use crate::util::{command, output};
use anyhow::{Context, Result, ensure};
use std::fs::{self};
use std::path::{Path, PathBuf};

/// The policy, the daemon's config and the flood's wrk scripts; returns the config's path.
pub(crate) fn write_files(dir: &Path, pin_root: &Path) -> Result<PathBuf> {
    let hash = argon2id(PASSWORD)?;
    let policy = dir.join("policy.toml");
    // The detector is off: the flood must keep flooding (a kernel block would end it).
    write_readable(
        &policy,
        &format!(
            "realm = \"bench\"\nunmatched = \"deny\"\n\n\
             [[basic_users]]\nusername = \"{USER}\"\npassword_hash = \"{hash}\"\n\n\
             [[routes]]\nname = \"open\"\npath_prefix = \"/open\"\n\n\
             [[routes]]\nname = \"login\"\npath_prefix = \"/login\"\nauth = [\"basic\"]\n\n\
             [detector]\nenabled = false\n"
        ),
    )?;
    let config = dir.join("api-shield.toml");
    write_readable(
        &config,
        &format!(
            "pin_root = \"{pin_root}\"\nstate_dir = \"{state}\"\naudit_log = \"{audit}\"\n\
             run_as = \"{RUN_AS}\"\n\n[limits]\npackets_per_second = 0\nsyn_per_second = 0\n\n\
             [metrics]\nlisten = \"{LOOPBACK}:{METRICS_PORT}\"\n\n\
             [gateway]\ncheck_listen = \"{LOOPBACK}:{CHECK_PORT}\"\npolicy_file = \"{policy}\"\n\
             default_upstream = \"http://{LOOPBACK}:{UPSTREAM_PORT}\"\n\n\
             [[gateway.listeners]]\nlisten = \"{LOOPBACK}:{GATEWAY_PORT}\"\n",
            pin_root = pin_root.display(),
            state = dir.join("state").display(),
            audit = dir.join("audit.jsonl").display(),
            policy = policy.display(),
        ),
    )?;
    let auth = format!("Basic {}", base64(&format!("{USER}:{WRONG}"))?);
    // Sources from 198.19.0.0/16 (benchmarking range), named by the trusted loopback proxy.
    let many = format!(
        "local n = 0\n\
         request = function()\n\
         \x20 n = n + 1\n\
         \x20 local xff = \"198.19.\" .. (n % 250 + 1) .. \".\" .. math.random(1, 250)\n\
         \x20 return wrk.format(\"GET\", \"{LOGIN_PATH}\", {{[\"Authorization\"] = \"{auth}\", [\"X-Forwarded-For\"] = xff}})\n\
         end\n\
         delay = function() return {FLOOD_DELAY_MS} end\n"
    );
    let one = format!(
        "request = function()\n\
         \x20 return wrk.format(\"GET\", \"{LOGIN_PATH}\", {{[\"Authorization\"] = \"{auth}\"}})\n\
         end\n\
         delay = function() return {FLOOD_DELAY_MS} end\n"
    );
    write_readable(&dir.join("flood-many.lua"), &many)?;
    write_readable(&dir.join("flood-one.lua"), &one)?;
    Ok(config)
}

/// An argon2id PHC string of `password` by the `argon2` command (xtask has no hashing crate).
pub(crate) fn argon2id(password: &str) -> Result<String> {
    let input = tempfile::NamedTempFile::new().context("temporary file for argon2")?;
    fs::write(input.path(), password).context("write the password for argon2")?;
    // `output` gives commands no stdin, and argon2 reads the password only from there.
    let out = output(
        command("sh")
            .arg("-c")
            .arg("exec argon2 \"$1\" -id -t \"$2\" -k \"$3\" -p \"$4\" -e < \"$5\"")
            .arg("argon2")
            .args([ARGON2_SALT, ARGON2_TIME, ARGON2_MEMORY_KIB, ARGON2_LANES])
            .arg(input.path()),
        "argon2",
    )?;
    let phc = out.trim().to_owned();
    ensure!(phc.starts_with("$argon2id$"), "argon2 printed {out:?}");
    Ok(phc)
}

/// Standard base64 of `text`, by coreutils' `base64`.
pub(crate) fn base64(text: &str) -> Result<String> {
    let input = tempfile::NamedTempFile::new().context("temporary file for base64")?;
    fs::write(input.path(), text).context("write the text for base64")?;
    Ok(
        output(command("base64").arg("-w0").arg(input.path()), "base64")?
            .trim()
            .to_owned(),
    )
}
