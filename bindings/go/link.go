package gemmacyber

// Where the library is found. By default: this repository's build/install (made by
// tools/install.sh), then the system's usual paths (e.g. /usr/local after an install there). For
// another prefix, build with CGO_CFLAGS=-I<prefix>/include CGO_LDFLAGS=-L<prefix>/lib, or build with
// -tags gemma_cyber_pkgconfig to take the flags from pkg-config's gemma_cyber.pc (PKG_CONFIG_PATH).

/*
#cgo !gemma_cyber_pkgconfig CFLAGS: -I${SRCDIR}/../../build/install/include
#cgo !gemma_cyber_pkgconfig LDFLAGS: -L${SRCDIR}/../../build/install/lib -Wl,-rpath,${SRCDIR}/../../build/install/lib -lgemma_cyber
#cgo gemma_cyber_pkgconfig pkg-config: gemma_cyber
*/
import "C"
