# SPDX-License-Identifier: GPL-2.0
#
# Build the module against a patched kernel tree (see patches/ and README).
#   make                 build dm_snap_persistent.ko against $(KDIR)
#   make KDIR=/path      use your own patched, built kernel tree (its O= dir)
#   make clippy          the same build with CLIPPY=1
#   make rustfmtcheck    check formatting of the module's Rust sources
#   make clean

LLVM ?= -19
KDIR ?= $(shell $(CURDIR)/scripts/kernel-dir.sh)
KBUILD = $(MAKE) -C $(KDIR) M=$(CURDIR) LLVM=$(LLVM)

# Rust sources that are built into the module.
MODULE_RS := dm_snap_persistent.rs $(filter-out rust/doc_examples.rs,$(shell find rust store -name '*.rs' 2>/dev/null))

.PHONY: all modules clippy rustfmt rustfmtcheck clean kdir-check

all: modules

kdir-check:
	@test -n "$(KDIR)" -a -f "$(KDIR)/Makefile" || \
		{ echo "KDIR is not a built kernel tree: run scripts/build-kernel.sh or pass KDIR=" >&2; exit 1; }

modules: kdir-check
	$(KBUILD) modules

clippy: kdir-check
	$(KBUILD) CLIPPY=1 modules

# rustfmt with the kernel's configuration; `make rustfmtcheck` of the kernel
# does not work with M=, so call rustfmt directly.
rustfmtcheck: kdir-check
	rustfmt --check --edition 2021 --config-path $$(realpath $(KDIR)/source)/.rustfmt.toml $(MODULE_RS)

rustfmt: kdir-check
	rustfmt --edition 2021 --config-path $$(realpath $(KDIR)/source)/.rustfmt.toml $(MODULE_RS)

clean:
	@if [ -n "$(KDIR)" ] && [ -f "$(KDIR)/Makefile" ]; then $(KBUILD) clean; fi
