# The two commands a new machine needs: `make demo` and `make test`. Both set up
# everything first (apt packages, node modules, build).
.PHONY: setup build lint format test demo clean bench docs fuzz

setup:
	@bash scripts/setup.sh

# tsc for dist/, then the CLI bundle bin/banger runs (see scripts/build.sh).
build: setup
	@sh scripts/build.sh

# Every script that runs in a guest or the initramfs is POSIX sh, checked as such (and the build and
# test-order scripts).
lint: setup
	npx tsc -p tsconfig.test.json --noEmit
	npx prettier --check .
	shellcheck -s sh guest-scripts/*.sh scripts/build.sh scripts/test-files.sh

format:
	npx prettier --write .

# Every test: unit, integration and end-to-end, in one run of node's test runner (it prints the
# summary CI reads), two files at a time. The files that boot VMs ("VM files": every file that gets
# its kernel and image from test/helpers/shared-image.ts, which a new test that boots a VM must use
# too) take turns in the VM lane (test/helpers/vm-lane.ts, a lock the kernel frees when the file's
# process exits), so no two of them ever run together; every other file runs beside them.
# scripts/test-files.sh spreads the VM files through the list so one slot keeps booting VMs; it
# lists test/zz-leaks.test.ts last, which waits until every other file has ended.
# At the end it prints how long each VM file held the lane (test/helpers/vm-lane.ts writes it).
# BANGER_TEST_SHARED: one default kernel and image per run, built by the first test file that needs
# them (see test/helpers/shared-image.ts); removed afterwards whatever the result.
test: build lint
	@shared=$$(mktemp -d /tmp/banger-test-shared.XXXXXX); \
	BANGER_TEST_SHARED=$$shared node --import tsx --test --test-concurrency=2 --test-reporter=spec $$(scripts/test-files.sh); \
	status=$$?; \
	if [ -s $$shared/lane-times ]; then echo "VM lane (the critical path), each VM file:"; sort -rn $$shared/lane-times; fi; \
	BANGER_HOME=$$shared/home ./bin/banger daemon stop >/dev/null 2>&1; \
	rm -rf $$shared; \
	exit $$status

demo: build
	@bash scripts/demo.sh

bench: build
	@for b in bench/*.ts; do node --import tsx "$$b" || exit 1; done

# Random and mutated tar layers against the layer flattener (not part of test): FUZZ_SECONDS=600 make fuzz.
fuzz: setup
	@node --import tsx bench/fuzz-flatten.ts $${FUZZ_SECONDS:-60}

clean:
	rm -rf dist

# Regenerate docs/commands.md and README's command table from the real --help.
docs: setup
	node --import tsx scripts/gen-docs.ts
