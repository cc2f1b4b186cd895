# Developer entry points.
#
#   make test                 the whole suite, exactly as CI runs it (.ci/run)
#   make fuzz                 fuzz every fuzz target of the repository in turn,
#                             FUZZTIME each (default 30s)
#   make fuzz FUZZTIME=10m    the issue's "10 minutes per target"
#   make fuzz-list            the targets `make fuzz` runs
#
# The targets are found when make runs, not listed here: every
# `func FuzzXxx(` in a _test.go file outside testdata. The seed corpora
# (f.Add and testdata/fuzz/FuzzXxx/) already run with every `go test`; a
# failing input that fuzzing finds is written to testdata/fuzz/FuzzXxx/ of
# its package, where `go test` replays it. `make fuzz` runs every target
# even when one fails, and fails at the end naming those that did.

FUZZTIME ?= 30s
GO ?= go

# "dir@FuzzName" for each fuzz target.
fuzz_targets = grep -rn --include='*_test.go' --exclude-dir=testdata --exclude-dir=.git -E '^func Fuzz[A-Za-z0-9_]*\(' . \
	| sed -E 's|^\./([^:]*):[0-9]+:func (Fuzz[A-Za-z0-9_]*).*|\1@\2|' | sort

.PHONY: test fuzz fuzz-list

test:
	bash .ci/run

fuzz-list:
	@$(fuzz_targets) | sed -E 's|^(.*)/[^/]*@|./\1 |; s|^[^/@]*@|. |'

fuzz:
	@targets=$$($(fuzz_targets)); \
	if [ -z "$$targets" ]; then echo "make fuzz: no fuzz target found" >&2; exit 1; fi; \
	failed=""; \
	for t in $$targets; do \
		file=$${t%@*}; name=$${t#*@}; pkg=./$$(dirname "$$file"); \
		echo "== $$pkg $$name for $(FUZZTIME)"; \
		$(GO) test "$$pkg" -run '^$$' -fuzz "^$$name\$$" -fuzztime $(FUZZTIME) || failed="$$failed $$pkg:$$name"; \
	done; \
	if [ -n "$$failed" ]; then echo "make fuzz: failed:$$failed" >&2; exit 1; fi; \
	echo "make fuzz: every target ran $(FUZZTIME) without a failure"
