#!/bin/sh
# banger vm workspace, guest side, run over SSH as `sh -c <this> banger-workspace <verb> ...`:
#   import <state-dir> <commit-marker> <dir> <git-config> <from> <branch>
#     stdin: one tar archive of the new workspace (work tree, .git), whose last member
#     .git/banger/commit holds <commit-marker>; <from> (a commit) and <branch> may be empty.
#   export <state-dir> patch|names
# Import needs only tar (and git for <from>, <branch> and the base export diffs against);
# export needs git. Exit statuses (GuestStatus in src/guest/workspace.ts): 10 no git in the
# guest for what needs it, 11 no workspace to export, 12 the import stream ended early.
set -eu
# banger's busybox (tar, mktemp, flock, ...) where the image lacks a tool; the image's own first.
PATH="${PATH:-/usr/sbin:/usr/bin:/sbin:/bin}:/usr/lib/banger/bin"
export PATH
have_git() { command -v git >/dev/null 2>&1; }
no_git() { echo "banger: $1 needs git, which is not installed in the guest" >&2; exit 10; }

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
# the previous workspace as it was. Prints `base <object>` last, or `no-git` without git.
import_workspace() {
  state=$1; marker=$2; dir=$3; config=$4; from=$5; branch=$6
  # Before anything is read or changed.
  [ -z "$from$branch" ] || have_git || no_git "checking out --from or --branch"
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
  # One tar -x: busybox's reads its input to the end. -o: GNU, busybox and bsdtar's no-same-owner.
  extracted=0
  tar -x -f - -o -C "$tmp" || extracted=$?
  # Only a complete stream ends with the marker: a killed or failed host tar never sends it.
  commit=$tmp/.git/banger/commit
  { [ -f "$commit" ] && [ "$(cat "$commit")" = "$marker" ]; } ||
    { echo "banger: the import stream ended early; the previous workspace is untouched" >&2; exit 12; }
  [ "$extracted" -eq 0 ] ||
    { echo "banger: tar could not extract the workspace (status $extracted); the previous workspace is untouched" >&2; exit 1; }
  rm -f "$commit"
  cd "$tmp"
  printf '%s' "$config" >.git/config
  if ! have_git; then
    # The files are all here; export (which needs git) finds no base and says so.
    swap_in
    echo no-git
    return
  fi
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
  swap_in
  printf 'base %s\n' "$base"
}

# Moves the import's temp dir to <dir> (the previous workspace goes) and records it.
swap_in() {
  cd /
  old=""
  if [ -e "$dir" ] || [ -L "$dir" ]; then old=$(mktemp -d "$state/workspace-old.XXXXXX"); mv "$dir" "$old"/; fi
  mv "$tmp" "$dir"
  trap - EXIT
  printf '%s\n' "$dir" >"$state/workspace.new"
  mv "$state/workspace.new" "$state/workspace"
  [ -z "$old" ] || rm -rf "$old"
}

# Prints the workspace dir and the base on two lines, then a binary patch (or NUL-separated
# names) of everything in the work tree past the base. Non-mutating: `git add -A` goes to a
# throwaway index, removed on exit; the real index, work tree and refs are only read.
export_workspace() {
  state=$1; what=$2
  have_git || no_git "workspace export"
  record=$state/workspace
  [ -f "$record" ] || { echo "banger: no workspace has been prepared in this VM" >&2; exit 11; }
  # The CLI streams exports over its own SSH connection, outside the daemon's workspace lock:
  # the guest's own lock keeps an import from swapping the workspace away under it.
  if command -v flock >/dev/null 2>&1; then exec 9>"$state/workspace.lock" && flock 9; fi
  dir=$(cat "$record")
  [ -d "$dir/.git" ] || { echo "banger: the workspace $dir is gone" >&2; exit 11; }
  [ -f "$dir/.git/banger/base" ] ||
    { echo "banger: the workspace $dir was prepared while the guest had no git, so it has no base to diff against: prepare it again" >&2; exit 11; }
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
