#!/usr/bin/env bash
# Install lenet5 with every extra (versions pinned in constraints.txt), the browser that the
# web page's end-to-end test drives, then run ruff, the import contracts and the whole test
# suite. Extra args go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
python -m pip install --quiet --disable-pip-version-check -e '.[all]' -c constraints.txt
if [ ! -x /usr/bin/chromium ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "installing Debian's chromium for the browser tests..."
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; } \
    >/dev/null 2>&1 || echo "chromium could not be installed; the browser tests will skip"
fi
python -m ruff check src tests benchmarks scripts
lint-imports  # the layers and engine-independence contracts in pyproject.toml
python -m pytest "$@"
