#!/usr/bin/env bash
# Installs the Go developer tools that `make lint` / `make deadcode` use,
# pinned by version, into the repo's git-ignored .tools/bin (not into GOPATH).
#
#   bash scripts/install-tools.sh              # all tools
#   bash scripts/install-tools.sh staticcheck  # only the ones named
#
# Idempotent: a tool is rebuilt only when the binary is missing, was built from
# another module version, or was built by another Go toolchain than the one in
# PATH (staticcheck must be at least as new as the Go it analyses). The up-to-
# date check is `go version -m`, a few milliseconds per tool; a cold install
# takes about a minute (module downloads are cached in GOMODCACHE as usual).
#
# The last lines printed (stdout) are the paths of the requested binaries, one
# per line; progress goes to stderr.
set -euo pipefail

# name -> package@version. Bump versions here only.
declare -A TOOLS=(
	[staticcheck]="honnef.co/go/tools/cmd/staticcheck@v0.8.2"
	[deadcode]="golang.org/x/tools/cmd/deadcode@v0.52.0"
)

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bin_dir="$root/.tools/bin"

log() { echo "install-tools: $*" >&2; }
die() { echo "install-tools: error: $*" >&2; exit 1; }

if ! command -v go >/dev/null 2>&1 && [ -x /usr/local/go/bin/go ]; then
	export PATH="$PATH:/usr/local/go/bin"
fi
command -v go >/dev/null 2>&1 || die "go not found in PATH"
# Run go from the repo root so toolchain selection (go.mod's go line,
# GOTOOLCHAIN) is the same one the project builds and is analysed with.
cd "$root"

if [ "$#" -eq 0 ]; then
	set -- staticcheck deadcode
fi
for name in "$@"; do
	[ -n "${TOOLS[$name]+x}" ] || die "unknown tool '$name' (known: ${!TOOLS[*]})"
done

go_version=$(go env GOVERSION)

# up_to_date BIN PKG VERSION: BIN exists, was built by $go_version from PKG's
# module at VERSION.
up_to_date() {
	local bin=$1 pkg=$2 want=$3 info
	[ -x "$bin" ] || return 1
	info=$(go version -m "$bin" 2>/dev/null) || return 1
	# First line: "<bin>: go1.x.y"; then "path <pkg>" and "mod <module> <version> <sum>".
	[ "${info%%$'\n'*}" = "$bin: $go_version" ] || return 1
	printf '%s\n' "$info" | awk -v pkg="$pkg" -v want="$want" '
		$1 == "path" && $2 == pkg { p = 1 }
		$1 == "mod" && $3 == want { m = 1 }
		END { exit !(p && m) }'
}

mkdir -p "$bin_dir"
tmp=
trap '[ -z "$tmp" ] || rm -rf "$tmp"' EXIT
for name in "$@"; do
	spec=${TOOLS[$name]}
	pkg=${spec%@*}
	version=${spec##*@}
	bin="$bin_dir/$name"
	if ! up_to_date "$bin" "$pkg" "$version"; then
		log "installing $spec ($go_version) into ${bin_dir#"$root"/}"
		# Build into a private dir and rename into place, so a concurrent run
		# (two `make lint`s) never sees a half-written binary.
		tmp=$(mktemp -d "$bin_dir/.install.XXXXXX")
		GOBIN="$tmp" go install "$spec" </dev/null || die "go install $spec failed"
		mv -f "$tmp/$name" "$bin"
		rm -rf "$tmp"
		tmp=
		up_to_date "$bin" "$pkg" "$version" || die "$bin does not report $pkg $version after install"
	fi
	echo "$bin"
done
