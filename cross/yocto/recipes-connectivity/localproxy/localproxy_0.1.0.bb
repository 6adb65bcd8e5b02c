SUMMARY = "AWS IoT Secure Tunneling local proxy"
DESCRIPTION = "Drop-in replacement for the AWS IoT Secure Tunneling local proxy, \
in Rust, linked against the system OpenSSL. Ships a hardened systemd unit for \
the destination side (Type=notify, token from an EnvironmentFile)."
LICENSE = "Apache-2.0"
LIC_FILES_CHKSUM = "file://${COMMON_LICENSE_DIR}/Apache-2.0;md5=89aea4e17d99a7cacdbeed46a0096b10"

# Where the localproxy sources come from, and the commit to build. Override in
# your distro/local.conf or a .bbappend, e.g.
#   LOCALPROXY_SRC_URI = "git://git.example.com/localproxy.git;protocol=https;branch=main"
#   SRCREV:pn-localproxy = "<commit>"
LOCALPROXY_SRC_URI ??= "git://git.example.com/localproxy.git;protocol=https;branch=main"
SRC_URI = "${LOCALPROXY_SRC_URI}"
SRCREV ??= "${AUTOREV}"
S = "${WORKDIR}/git"
PV .= "+git"

# Every crate of Cargo.lock as a crate:// fetch with its checksum; regenerate
# with cross/yocto/update-crates.py (or `bitbake -c update_crates localproxy`).
require localproxy-crates.inc

DEPENDS += "openssl"
inherit cargo cargo-update-recipe-crates pkgconfig systemd

# Link the target's libssl.so.3/libcrypto.so.3 from the recipe sysroot (found
# through pkg-config); never build a vendored copy.
export OPENSSL_NO_VENDOR = "1"

do_install:append() {
    install -d ${D}${systemd_system_unitdir}
    sed -e 's|@BINDIR@|${bindir}|g' -e 's|@SYSCONFDIR@|${sysconfdir}|g' \
        ${S}/cross/systemd/localproxy-destination.service.in \
        > ${D}${systemd_system_unitdir}/localproxy-destination.service
    chmod 0644 ${D}${systemd_system_unitdir}/localproxy-destination.service

    install -d ${D}${sysconfdir}/localproxy
    install -m 0644 ${S}/cross/systemd/destination.conf ${D}${sysconfdir}/localproxy/destination.conf

    install -d ${D}${docdir}/${BPN}
    install -m 0644 ${S}/cross/systemd/token.env.example ${D}${docdir}/${BPN}/
    sed -e 's|/usr/bin/|${bindir}/|g' -e 's|/etc/|${sysconfdir}/|g' \
        ${S}/cross/systemd/localproxy-destination-credential.conf \
        > ${D}${docdir}/${BPN}/localproxy-destination-credential.conf
}

# The local tunneling service is a test and demo tool: its own package, not
# installed on devices unless asked for.
PACKAGES =+ "${PN}-tunnel-service"
FILES:${PN}-tunnel-service = "${bindir}/tunnel-service"

SYSTEMD_SERVICE:${PN} = "localproxy-destination.service"
# Needs a destination token in ${sysconfdir}/localproxy/token.env first.
SYSTEMD_AUTO_ENABLE:${PN} = "disable"
CONFFILES:${PN} = "${sysconfdir}/localproxy/destination.conf"
# The real service's certificate is verified against the system CA store.
RDEPENDS:${PN} += "ca-certificates"
