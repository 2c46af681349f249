#!/usr/bin/env bash
# The crates vendored in patches/ must be exactly their crates.io release
# plus the change in their .diff: each release is fetched from the
# registry, its .diff applied, and every vendored file compared with the
# result. Any other difference fails.
source "$(dirname "$0")/env.sh"

step "vendored crates = crates.io release + patches/<crate>.diff"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
registry="${CARGO_HOME:-$HOME/.cargo}/registry/cache"
failed=0
for dir in patches/*/; do
  name=$(basename "$dir")
  version=$(sed -n 's/^version = "\(.*\)"/\1/p' "$dir/Cargo.toml" | head -1)
  [ -f "patches/$name.diff" ] || { echo "patches/$name has no patches/$name.diff"; failed=1; continue; }
  # The release, fetched by a throwaway manifest that depends on exactly it.
  manifest="$work/fetch-$name"
  mkdir -p "$manifest/src"
  : > "$manifest/src/lib.rs"
  printf '[package]\nname = "fetch"\nversion = "0.0.0"\nedition = "2021"\n\n[dependencies]\n%s = "=%s"\n\n[workspace]\n' \
    "$name" "$version" > "$manifest/Cargo.toml"
  crate=$(ls "$registry"/*/"$name-$version.crate" 2>/dev/null | head -1 || true)
  if [ -z "$crate" ]; then
    cargo fetch --quiet --manifest-path "$manifest/Cargo.toml"
    crate=$(ls "$registry"/*/"$name-$version.crate" | head -1)
  fi
  tar xzf "$crate" -C "$work"
  pristine="$work/$name-$version"
  patch --quiet --directory "$pristine" -p1 < "patches/$name.diff"
  differs=0
  while IFS= read -r file; do
    rel=${file#"$dir"}
    if ! diff -u "$pristine/$rel" "$file" > "$work/out.diff" 2>&1; then
      echo "patches/$name/$rel differs from $name $version + patches/$name.diff:"
      head -40 "$work/out.diff"
      differs=1
    fi
  done < <(find "$dir" -type f | sort)
  if [ "$differs" = 0 ]; then
    echo "$name $version: its $(find "$dir" -type f | wc -l) files are the release plus its diff"
  else
    failed=1
  fi
done
exit $failed
