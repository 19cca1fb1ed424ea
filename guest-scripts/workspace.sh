#!/bin/sh
# banger vm workspace, guest side, run over SSH as `sh -c <this> banger-workspace <verb> ...`:
#   import <state-dir> <commit-marker> <dir> <git-config> <from> <branch> <dest>...
#     stdin: one tar archive per <dest> ("." or ".git" of the new workspace), then the marker;
#     <from> (a commit) and <branch> may be empty.
#   export <state-dir> patch|names
# Exit statuses (GuestStatus in src/guest/workspace.ts): 10 no git in the guest, 11 no
# workspace to export, 12 the import stream ended before its marker.
set -eu
command -v git >/dev/null 2>&1 || { echo "banger: git is not installed in the guest" >&2; exit 10; }

# Git in the guest, never running the repo's hooks or an fsmonitor the guest does not have.
# The imported index carries the host's inodes and ctimes: comparing only mtime and size
# (tar keeps both) spares re-hashing every file on the first `add -A` (1 s per 40 MiB under TCG).
g() { git -c core.hooksPath=/dev/null -c core.fsmonitor=false -c core.checkStat=minimal -c core.trustctime=false "$@"; }

# Builds a throwaway index at "$idx" (inside .git, as read-tree --index-output needs) holding
# HEAD plus `git add -A` of the work tree: what the work tree holds, minus ignored files. The
# real index is only read.
snapshot() {
  g read-tree -m --index-output="$idx" HEAD 2>/dev/null ||
    g read-tree --index-output="$idx" HEAD 2>/dev/null ||
    g read-tree --index-output="$idx" --empty
  GIT_INDEX_FILE="$idx" g add -A
}

# Extracts into a temp dir beside the workspaces, checks out <from> / <branch>, records the
# base, then swaps the temp dir in; any failure before the swap removes the temp dir and leaves
# the previous workspace as it was. Prints `base <object>` last.
import_workspace() {
  state=$1; marker=$2; dir=$3; config=$4; from=$5; branch=$6; shift 6
  mkdir -p "$state"
  # The daemon's workspace lock ends when its ssh ends, but a cancelled import's script may
  # still run here: a lock in the guest keeps the next one from sweeping its temp dir.
  if command -v flock >/dev/null 2>&1; then exec 9>"$state/workspace.lock"; flock 9; fi
  # Left over by an import that was killed (none runs now: we hold the lock).
  rm -rf "$state"/workspace-import.* "$state"/workspace-old.*
  tmp=$(mktemp -d "$state/workspace-import.XXXXXX")
  chmod 755 "$tmp"
  trap 'rm -rf "$tmp"' EXIT
  mkdir "$tmp/.git"
  for dest in "$@"; do
    tar -x -f - --no-same-owner -C "$tmp/$dest"
  done
  # Only a complete stream ends with the marker: a killed or failed host tar never sends it.
  tail=$(tail -c $((${#marker} + 1)) | tr -d '\000')
  [ "$tail" = "$marker" ] || { echo "banger: the import stream ended early; the previous workspace is untouched" >&2; exit 12; }
  cd "$tmp"
  printf '%s' "$config" >.git/config
  # A submodule's or bare-backed worktree's config points elsewhere; here it is a plain repo.
  git config --file .git/config --unset-all core.worktree 2>/dev/null || true
  git config --file .git/config core.bare false
  if [ -n "$from" ] && [ -n "$branch" ]; then
    g checkout -q -f -B "$branch" "$from"
  elif [ -n "$from" ]; then
    g -c advice.detachedHead=false checkout -q -f --detach "$from"
  elif [ -n "$branch" ]; then
    g checkout -q -B "$branch"
  fi
  if [ -n "$from" ]; then
    # Nothing of the work tree was sent: count what the checkout wrote.
    base=$from
    printf 'files %s\n' "$(g ls-files | wc -l)"
  else
    # The base is a tree of exactly what was imported; export diffs against it.
    idx=$(mktemp .git/banger-index.XXXXXX)
    snapshot
    base=$(GIT_INDEX_FILE="$idx" g write-tree)
    rm -f "$idx"
  fi
  mkdir -p .git/banger
  printf '%s\n' "$base" >.git/banger/base
  cd /
  old=""
  if [ -e "$dir" ] || [ -L "$dir" ]; then old=$(mktemp -d "$state/workspace-old.XXXXXX"); mv "$dir" "$old"/; fi
  mv "$tmp" "$dir"
  trap - EXIT
  printf '%s\n' "$dir" >"$state/workspace.new"
  mv "$state/workspace.new" "$state/workspace"
  [ -z "$old" ] || rm -rf "$old"
  printf 'base %s\n' "$base"
}

# Prints the workspace dir and the base on two lines, then a binary patch (or NUL-separated
# names) of everything in the work tree past the base. Non-mutating: `git add -A` goes to a
# throwaway index, removed on exit; the real index, work tree and refs are only read.
export_workspace() {
  state=$1; what=$2
  record=$state/workspace
  [ -f "$record" ] || { echo "banger: no workspace has been prepared in this VM" >&2; exit 11; }
  # The CLI streams exports over its own SSH connection, outside the daemon's workspace lock:
  # the guest's own lock keeps an import from swapping the workspace away under it.
  if command -v flock >/dev/null 2>&1; then exec 9>"$state/workspace.lock" && flock 9; fi
  dir=$(cat "$record")
  [ -f "$dir/.git/banger/base" ] || { echo "banger: the workspace $dir is gone" >&2; exit 11; }
  cd "$dir"
  base=$(cat .git/banger/base)
  idx=$(mktemp .git/banger/export-index.XXXXXX)
  trap 'rm -f "$idx" "$idx.lock"' EXIT
  snapshot
  printf '%s\n%s\n' "$dir" "$base"
  if [ "$what" = names ]; then
    GIT_INDEX_FILE="$idx" g diff-index --cached --name-only -z "$base"
  else
    GIT_INDEX_FILE="$idx" g diff-index --cached -p --binary "$base"
  fi
}

verb=$1; shift
case $verb in
import) import_workspace "$@" ;;
export) export_workspace "$@" ;;
*) echo "banger: unknown verb '$verb'" >&2; exit 2 ;;
esac
