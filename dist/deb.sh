#!/usr/bin/env bash
# deb.sh builds the banger Debian package with nfpm; `make deb` runs it after
# `make build`. The .deb is written under a temporary name and renamed when
# complete, so a failure never leaves a half-built banger_*.deb behind.
#
# Environment (the Makefile sets all but the last two):
#   BIN           directory with banger, bangerd and banger-agent
#   DEB_DIR       where banger_<version>_amd64.deb goes
#   APT_PACKAGES  runtime apt packages, space-separated: the package's Depends
#                 (less Essential ones, plus libc6)
#   GO            the go command (default: go)
#   DEB_VERSION   overrides the version derived from git describe
#   DEB_MAINTAINER  "Name <email>" (default: git's user.name and user.email,
#                   else the author of HEAD)
#
# Version: git describe against tags v<upstream> (v1.2.3, v1.2.3-rc1):
#   on a tag            1.2.3            (1.2.3-rc1 becomes 1.2.3~rc1)
#   N commits after it  1.2.3+git<N>.<hash>
#   no tag at all       0.0.0~git<N>.<hash>   (N = commits in HEAD, so versions
#                                              of later commits sort higher)
#   uncommitted changes +dirty appended
set -euo pipefail

dist=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(dirname "$dist")
GO=${GO:-go}
: "${BIN:?BIN must name the directory holding the binaries (make deb sets it)}"
: "${DEB_DIR:?DEB_DIR must name the output directory (make deb sets it)}"
: "${APT_PACKAGES:?APT_PACKAGES must list the runtime apt packages (make deb sets it)}"

die() {
	echo "make deb: $*" >&2
	exit 1
}

# debversion prints a Debian-valid version for the checkout at $repo.
debversion() {
	local desc dirty="" hash count tag n base
	if [ -n "$(git -C "$repo" status --porcelain --untracked-files=no 2>/dev/null)" ]; then
		dirty="+dirty"
	fi
	if desc=$(git -C "$repo" describe --tags --match 'v[0-9]*' --long --abbrev=12 2>/dev/null); then
		hash=${desc##*-g}
		desc=${desc%-g*}
		n=${desc##*-}
		tag=${desc%-*}
		base=${tag#v}
		base=${base//-/\~}
		case $base in
		[0-9]*) ;;
		*) die "tag $tag does not start with a digit after the v; tag releases v<digit>..." ;;
		esac
		[[ $base =~ ^[0-9A-Za-z.+~]+$ ]] || die "tag $tag has characters a Debian version cannot hold (use digits, letters, . + - ~)"
		if [ "$n" = 0 ]; then
			echo "$base$dirty"
		else
			echo "$base+git$n.$hash$dirty"
		fi
		return
	fi
	hash=$(git -C "$repo" rev-parse --short=12 HEAD 2>/dev/null) ||
		die "cannot derive a version: $repo is not a git checkout with commits; set DEB_VERSION"
	count=$(git -C "$repo" rev-list --count HEAD)
	echo "0.0.0~git$count.$hash$dirty"
}

version=${DEB_VERSION:-$(debversion)}
[[ $version =~ ^[0-9][0-9A-Za-z.+~]*$ ]] || die "version $version is not a valid Debian version"
if [ -z "${DEB_MAINTAINER:-}" ]; then
	name=$(git -C "$repo" config user.name || true)
	email=$(git -C "$repo" config user.email || true)
	if [ -n "$name" ] && [ -n "$email" ]; then
		DEB_MAINTAINER="$name <$email>"
	else
		DEB_MAINTAINER=$(git -C "$repo" log -1 --format='%an <%ae>' 2>/dev/null) ||
			die "no maintainer: set DEB_MAINTAINER=\"Name <email>\""
	fi
fi

mkdir -p "$DEB_DIR"
DEB_DIR=$(cd "$DEB_DIR" && pwd)
out="$DEB_DIR/banger_${version}_amd64.deb"
partial="$DEB_DIR/.banger_${version}_amd64.deb.partial"
work=$(mktemp -d)
cleanup() {
	rm -rf "$work"
	rm -f "$partial"
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP # so that cleanup runs when interrupted too

# Timestamps in the package: the commit's time unless the caller chose one.
SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git -C "$repo" log -1 --format=%ct 2>/dev/null || date +%s)}
export SOURCE_DATE_EPOCH

# The packager: nfpm at the version dist/tools/go.mod pins, built from the Go
# module cache (downloaded through the module proxy the first time).
nfpm_version=$(awk '$1 == "github.com/goreleaser/nfpm/v2" { print $2 }' "$dist/tools/go.mod")
if ! "$GO" -C "$dist/tools" build -o "$work/nfpm" github.com/goreleaser/nfpm/v2/cmd/nfpm 2>"$work/build.log"; then
	{
		echo "make deb: cannot build the packager, nfpm $nfpm_version (module github.com/goreleaser/nfpm/v2,"
		if grep -Eq 'module lookup disabled|dial tcp|missing go.sum|cannot find module|reading https?://|no such host|proxy' "$work/build.log"; then
			echo "pinned in dist/tools/go.mod): it is not in the Go module cache and could not be downloaded."
			echo "go said:"
			sed 's/^/    /' "$work/build.log"
			echo "fix: download it once through a module proxy you can reach, then make deb works offline:"
			echo "    GOPROXY=https://proxy.golang.org GOFLAGS=-mod=mod go -C dist/tools mod download"
			echo "(now: GOPROXY=$("$GO" env GOPROXY), GOMODCACHE=$("$GO" env GOMODCACHE))"
		else
			echo "pinned in dist/tools/go.mod). go said:"
			sed 's/^/    /' "$work/build.log"
		fi
	} >&2
	exit 1
fi

for b in banger bangerd banger-agent; do
	[ -x "$BIN/$b" ] || die "$BIN/$b is missing: run make build (or make deb, which builds first)"
done
bin=$(cd "$BIN" && pwd)
sed 's#@PREFIX@#/usr#g' "$dist/bangerd.service" >"$work/bangerd.service"

# Depends: the runtime apt packages, less the Essential ones (always installed;
# Debian policy and lintian say not to depend on them), plus the libc the two
# dynamically linked binaries need (the newest GLIBC_ symbol version they use).
essential=" util-linux "
depends=""
for p in $APT_PACKAGES; do
	case $essential in *" $p "*) continue ;; esac
	depends="${depends:+$depends, }$p"
done
libc="libc6"
if command -v readelf >/dev/null; then
	glibc=$(readelf -V "$bin/banger" "$bin/bangerd" | { grep -o 'GLIBC_[0-9][0-9.]*' || true; } | sed 's/GLIBC_//' | sort -uV | tail -n1)
	[ -z "$glibc" ] || libc="libc6 (>= $glibc)"
fi
depends="$libc, $depends"

# A native package's changelog: one entry, this build.
{
	echo "banger ($version) unstable; urgency=medium"
	echo
	echo "  * Built from $(git -C "$repo" describe --always --dirty 2>/dev/null || echo "an unknown commit")."
	echo
	echo " -- $DEB_MAINTAINER  $(LC_ALL=C date -u -R -d "@$SOURCE_DATE_EPOCH")"
} | gzip -9n >"$work/changelog.gz"
touch -d "@$SOURCE_DATE_EPOCH" "$work/changelog.gz"

export BANGER_VERSION="$version" BANGER_DEPENDS="$depends" BANGER_BIN="$bin" \
	BANGER_UNIT="$work/bangerd.service" BANGER_CONFIG="$repo/config/config.sample.toml" \
	BANGER_MAINTAINER="$DEB_MAINTAINER" BANGER_CHANGELOG="$work/changelog.gz"

(cd "$dist" && "$work/nfpm" package --config nfpm.yaml --packager deb --target "$partial") >"$work/nfpm.log" 2>&1 || {
	cat "$work/nfpm.log" >&2
	die "nfpm failed (above); no package written"
}
mv -f "$partial" "$out"
echo "$out"
