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
# builds the benchmark package so that it cannot silently stop compiling.
test: dependencies
	@./scripts/install-test-tools
	$(SWIFT) build --build-tests
	SWIFT=$(SWIFT) ./scripts/run-tests
	$(SWIFT) build --package-path Benchmarks

build: dependencies
	$(SWIFT) build -c release

# The micro-benchmark package (ordo-one/benchmark); see Docs/BENCHMARKS.md.
benchmarks: dependencies
	cd Benchmarks && $(SWIFT) package --disable-sandbox benchmark

clean:
	rm -rf .build Benchmarks/.build
