#!/usr/bin/env bash
# Installs sagemaker-executor on a gitlab-runner host: the binary, a config dir, the per-job
# directories owned by the runner's user, and a check of the config.
#   sudo runner-setup/install.sh [path/to/sagemaker-executor] [runner user]
set -euo pipefail
bin="${1:-target/release/sagemaker-executor}"
user="${2:-gitlab-runner}"
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

install -m 0755 "$bin" /usr/local/bin/sagemaker-executor
install -d -m 0755 /etc/sagemaker-executor
if [ ! -f /etc/sagemaker-executor/config.toml ]; then
    install -m 0640 -g "$user" "$here/sagemaker-executor.toml" /etc/sagemaker-executor/config.toml
    echo "edit /etc/sagemaker-executor/config.toml, then run: sagemaker-executor --config /etc/sagemaker-executor/config.toml validate"
fi
install -d -m 0750 -o "$user" -g "$user" /var/lib/sagemaker-executor /var/lib/sagemaker-executor/builds /var/lib/sagemaker-executor/cache
sagemaker-executor --config /etc/sagemaker-executor/config.toml validate || true
echo "wire it into gitlab-runner's config.toml as shown in config.toml.example"
