# The two commands a new user needs (see README.md):
#   make run    the main job: a local cluster on loopback, a workload, the query CLI reading the result
#   make test   build everything and run the whole test suite
# Both install the Debian packages Calisson needs first, when they are missing.

SWIFT ?= swift

.PHONY: run test dependencies build benchmarks clean

dependencies:
	@./scripts/install-dependencies

run: dependencies
	Cluster/local.sh

# Builds tests first on their own so that compiler warnings in project code show up,
# runs them under a watchdog that names a test that hangs (scripts/run-tests), and
# builds the benchmark package and compiles the fuzz targets (their modules, without
# libFuzzer: Tests/Fuzz/run builds and runs them; the list is its) so that neither can
# silently stop compiling.
FUZZ_TARGETS = $(shell sed -n "s/^all=(\(.*\))$$/\1/p" Tests/Fuzz/run)

test: dependencies
	@./scripts/install-test-tools
	$(SWIFT) build --build-tests
	SWIFT=$(SWIFT) ./scripts/run-tests
	$(SWIFT) build --package-path Benchmarks
	@test -n "$(FUZZ_TARGETS)" || { echo "no fuzz targets read from Tests/Fuzz/run" >&2; exit 1; }
	for target in $(FUZZ_TARGETS); do CALISSON_FUZZ=1 $(SWIFT) build --target fuzz-$$target || exit 1; done

build: dependencies
	$(SWIFT) build -c release

# The micro-benchmark package (ordo-one/benchmark); see Docs/BENCHMARKS.md.
benchmarks: dependencies
	cd Benchmarks && $(SWIFT) package --disable-sandbox benchmark

clean:
	rm -rf .build Benchmarks/.build
