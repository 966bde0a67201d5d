# dbward: one entry point. Everything is built out of tree under $(BUILD).
#   make            build/bin/dbward-agent
#   make asan       the same with AddressSanitizer + UBSan, in build/asan/
#   make test       unit tests (Criterion) and integration tests (pytest),
#                   each against the plain and the sanitized build
#   make demo       a throwaway PostgreSQL, the agent, an intercepted psql
#   make bench      direct vs PgBouncer vs the agent, interleaved (root)
#   make deps       install the Debian packages the build needs (root)

BUILD ?= build
SANITIZE ?= 0

CC ?= cc
CLANG ?= clang
BPFTOOL ?= bpftool
PYTHON ?= /usr/bin/python3

GEN := $(BUILD)/gen
OBJ := $(BUILD)/obj
BIN := $(BUILD)/bin

ARCH := $(shell uname -m | sed -e 's/x86_64/x86/' -e 's/aarch64/arm64/')

CFLAGS ?= -O2 -g
CFLAGS += -std=gnu11 -Wall -Wextra -Werror -Wshadow -Wformat=2 -Wno-format-nonliteral \
	  -Wstrict-prototypes -Wmissing-prototypes -fno-strict-aliasing \
	  -D_GNU_SOURCE -I. -I$(GEN) -MMD -MP
LDLIBS := -lbpf -lelf -lz -lyaml -lpg_query -lssl -lcrypto -lpthread

ifeq ($(SANITIZE),1)
CFLAGS += -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
LDFLAGS += -fsanitize=address,undefined
endif

COMMON_SRCS := $(wildcard common/*.c)
AGENT_SRCS := $(filter-out agent/main.c,$(wildcard agent/*.c))
UNIT_SRCS := $(wildcard tests/unit/*.c)

COMMON_OBJS := $(COMMON_SRCS:%.c=$(OBJ)/%.o)
AGENT_OBJS := $(AGENT_SRCS:%.c=$(OBJ)/%.o)
UNIT_OBJS := $(UNIT_SRCS:%.c=$(OBJ)/%.o)

DEPS_STAMP := $(BUILD)/.deps-ok

.PHONY: all asan test unit-test integration-test demo bench deps clean
.DELETE_ON_ERROR:

all: $(BIN)/dbward-agent

# Missing Debian packages are installed once per build tree.
$(DEPS_STAMP): scripts/install-deps.sh | $(BUILD)
	./scripts/install-deps.sh
	touch $@

deps:
	./scripts/install-deps.sh

$(BUILD) $(GEN) $(BIN):
	mkdir -p $@

# --- BPF: vmlinux.h from the running kernel, object, skeleton -------------
$(GEN)/vmlinux.h: | $(GEN) $(DEPS_STAMP)
	$(BPFTOOL) btf dump file /sys/kernel/btf/vmlinux format c > $@

$(GEN)/intercept.bpf.o: bpf/intercept.bpf.c bpf/intercept.h $(GEN)/vmlinux.h | $(GEN)
	$(CLANG) -g -O2 -target bpf -D__TARGET_ARCH_$(ARCH) -Wall -Werror \
		-I$(GEN) -Ibpf -c $< -o $@

$(GEN)/intercept.skel.h: $(GEN)/intercept.bpf.o | $(GEN)
	$(BPFTOOL) gen skeleton $< name intercept_bpf > $@

# --- user space ------------------------------------------------------------
$(OBJ)/%.o: %.c | $(GEN)/intercept.skel.h $(DEPS_STAMP)
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) -c $< -o $@

$(BIN)/dbward-agent: $(OBJ)/agent/main.o $(AGENT_OBJS) $(COMMON_OBJS) | $(BIN)
	$(CC) $(LDFLAGS) $^ $(LDLIBS) -o $@

$(BIN)/unit-tests: $(UNIT_OBJS) $(AGENT_OBJS) $(COMMON_OBJS) | $(BIN)
	$(CC) $(LDFLAGS) $^ $(LDLIBS) -lcriterion -o $@

asan:
	$(MAKE) BUILD=build/asan SANITIZE=1 build/asan/bin/dbward-agent build/asan/bin/unit-tests

# --- tests -----------------------------------------------------------------
# Unit tests run against both builds; integration tests drive the real
# agent (root: BPF, cgroups, network namespaces), again both builds.
SAN_ENV := ASAN_OPTIONS=detect_leaks=1:abort_on_error=0:exitcode=86 \
	   UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1

test: unit-test integration-test

# Criterion passes a test whose worker LSan or UBSan complained in, so the
# sanitized run also fails on any sanitizer report in its output.
SAN_REPORT := 'ERROR: (Leak|Address)Sanitizer|runtime error:'

unit-test: $(BIN)/unit-tests asan
	$(BIN)/unit-tests --jobs 2
	$(SAN_ENV) build/asan/bin/unit-tests --jobs 1 >build/asan/unit-tests.log 2>&1; \
		status=$$?; cat build/asan/unit-tests.log; \
		if grep -qE $(SAN_REPORT) build/asan/unit-tests.log; then \
			echo "unit-test: sanitizer report above" >&2; exit 1; fi; \
		exit $$status

integration-test: all asan
	DBWARD_AGENT=$(abspath $(BIN)/dbward-agent) \
		$(PYTHON) -m pytest -q tests/integration
	$(SAN_ENV) DBWARD_AGENT=$(abspath build/asan/bin/dbward-agent) \
		$(PYTHON) -m pytest -q tests/integration

demo: all
	./scripts/demo.sh $(abspath $(BIN)/dbward-agent)

bench: all
	$(PYTHON) tests/bench/run.py --agent $(abspath $(BIN)/dbward-agent)

clean:
	rm -rf $(BUILD)

-include $(shell find $(OBJ) -name '*.d' 2>/dev/null)
