# packaging.cmake - Debian packages from the build tree (cpack -G DEB):
#
#   qchain        the commands (their manual pages, bash completion)
#   libqcow2-0    the shared library (SONAME libqcow2.so.0)
#   libqcow2-dev  headers, libqcow2.so, qcow2.pc, the CMake package, qcow2(3)
#
# Configure with -DCMAKE_INSTALL_PREFIX=/usr, so that GNUInstallDirs puts
# the library in the multiarch directory (lib/x86_64-linux-gnu) and the
# commands carry no RPATH, then `cpack -G DEB` in the build directory.
# Depends come from the shared-library dependencies (dpkg-shlibdeps: zlib,
# zstd, uuid, libcrypto), plus the library package for the others.  Each
# package carries /usr/share/doc/PACKAGE/{copyright,changelog.gz}.
# scripts/package.sh builds, installs into a scratch root and checks them.

set(QCHAIN_DEB_MAINTAINER "qchain developers <qchain@lists.qchain.dev>"
    CACHE STRING "Maintainer field of the Debian packages")

# copyright and a native changelog (gzip -9n: reproducible) per package
set(QCHAIN_DOC_STAGE ${PROJECT_BINARY_DIR}/debian-doc)
file(MAKE_DIRECTORY ${QCHAIN_DOC_STAGE})
configure_file(${PROJECT_SOURCE_DIR}/cmake/debian/copyright
               ${QCHAIN_DOC_STAGE}/copyright COPYONLY)
string(TIMESTAMP QCHAIN_DEB_DATE "%a, %d %b %Y %H:%M:%S +0000" UTC)
if(DEFINED ENV{SOURCE_DATE_EPOCH})
  string(TIMESTAMP QCHAIN_DEB_DATE "%a, %d %b %Y %H:%M:%S +0000" UTC)
endif()
foreach(pkg qchain libqcow2-0 libqcow2-dev)
  file(WRITE ${QCHAIN_DOC_STAGE}/changelog.${pkg}
"${pkg} (${PROJECT_VERSION}) unstable; urgency=medium

  * Built from the qchain source tree (see its git history).

 -- ${QCHAIN_DEB_MAINTAINER}  ${QCHAIN_DEB_DATE}
")
endforeach()
find_program(GZIP_PROGRAM gzip)
set(comps qchain libqcow2 libqcow2-dev)
set(pkgs qchain libqcow2-0 libqcow2-dev)
foreach(i RANGE 2)
  list(GET comps ${i} comp)
  list(GET pkgs ${i} pkg)
  add_custom_command(OUTPUT ${QCHAIN_DOC_STAGE}/${pkg}/changelog.gz
    COMMAND ${CMAKE_COMMAND} -E make_directory ${QCHAIN_DOC_STAGE}/${pkg}
    COMMAND ${GZIP_PROGRAM} -9nc ${QCHAIN_DOC_STAGE}/changelog.${pkg}
            > ${QCHAIN_DOC_STAGE}/${pkg}/changelog.gz
    DEPENDS ${QCHAIN_DOC_STAGE}/changelog.${pkg} VERBATIM)
  list(APPEND QCHAIN_DOC_OUTPUTS ${QCHAIN_DOC_STAGE}/${pkg}/changelog.gz)
  install(FILES ${QCHAIN_DOC_STAGE}/copyright
                ${QCHAIN_DOC_STAGE}/${pkg}/changelog.gz
          DESTINATION ${CMAKE_INSTALL_DATADIR}/doc/${pkg} COMPONENT ${comp})
endforeach()
add_custom_target(qchain_debian_doc ALL DEPENDS ${QCHAIN_DOC_OUTPUTS})

set(CPACK_GENERATOR DEB)
set(CPACK_PACKAGE_NAME qchain)
set(CPACK_PACKAGE_VERSION ${PROJECT_VERSION})
set(CPACK_PACKAGE_CONTACT ${QCHAIN_DEB_MAINTAINER})
set(CPACK_DEBIAN_PACKAGE_MAINTAINER ${QCHAIN_DEB_MAINTAINER})
# (no CPACK_PACKAGE_DESCRIPTION_SUMMARY: CPack would put it before each
# package's own synopsis)
set(CPACK_DEBIAN_PACKAGE_SECTION admin)
set(CPACK_DEBIAN_PACKAGE_PRIORITY optional)
set(CPACK_DEBIAN_PACKAGE_HOMEPAGE "https://qchain.dev")
set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)
set(CPACK_DEB_COMPONENT_INSTALL ON)
set(CPACK_COMPONENTS_ALL qchain libqcow2 libqcow2-dev)
set(CPACK_STRIP_FILES ON)
set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS ON)
# the library's shlibs (what a package linking it depends on) and an
# ldconfig trigger, rather than CPack's postinst/postrm calling ldconfig
set(QCHAIN_DEB_CONTROL ${PROJECT_BINARY_DIR}/debian-control)
file(WRITE ${QCHAIN_DEB_CONTROL}/shlibs
     "libqcow2 ${PROJECT_VERSION_MAJOR} libqcow2-0 (>= ${PROJECT_VERSION})\n")
file(WRITE ${QCHAIN_DEB_CONTROL}/triggers "activate-noawait ldconfig\n")
# (CPack writes ldconfig calls into postinst and postrm unless the package
# brings its own: these have nothing to do, the trigger does it)
foreach(script postinst postrm)
  file(WRITE ${QCHAIN_DEB_CONTROL}/${script}
       "#!/bin/sh\nset -e\n# ldconfig runs from the trigger (triggers)\nexit 0\n")
endforeach()
set(CPACK_DEBIAN_LIBQCOW2_PACKAGE_CONTROL_EXTRA
    ${QCHAIN_DEB_CONTROL}/shlibs ${QCHAIN_DEB_CONTROL}/triggers
    ${QCHAIN_DEB_CONTROL}/postinst ${QCHAIN_DEB_CONTROL}/postrm)
set(CPACK_DEBIAN_LIBQCOW2_PACKAGE_CONTROL_STRICT_PERMISSION ON)
set(CPACK_DEBIAN_ENABLE_COMPONENT_DEPENDS ON)
# dpkg-shlibdeps finds libqcow2.so.0 in the library's staging directory
set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS_PRIVATE_DIRS
    ${PROJECT_BINARY_DIR}/qcow2)

set(CPACK_DEBIAN_QCHAIN_PACKAGE_NAME qchain)
set(CPACK_DEBIAN_QCHAIN_PACKAGE_SECTION admin)
set(CPACK_DEBIAN_QCHAIN_DESCRIPTION
"offline toolkit for QEMU qcow2 images and backing chains
qchain inspects, checks, exports, snapshots, rebases and commits QEMU
qcow2 disk images and their backing chains offline, without QEMU or
libvirt: which layer serves each byte, what a commit would copy and how
long it takes, and a crash-safe, resumable commit into the base.")
set(CPACK_COMPONENT_QCHAIN_DEPENDS libqcow2)

set(CPACK_DEBIAN_LIBQCOW2_PACKAGE_NAME libqcow2-0)
set(CPACK_DEBIAN_LIBQCOW2_PACKAGE_SECTION libs)
set(CPACK_DEBIAN_LIBQCOW2_DESCRIPTION
"library for QEMU qcow2 images and backing chains
libqcow2 parses, validates, reads, writes, checks and commits QEMU qcow2
and raw disk images and their backing chains, with bounded memory and
hostile-input checks.  This package holds the shared library.")

set(CPACK_DEBIAN_LIBQCOW2-DEV_PACKAGE_NAME libqcow2-dev)
set(CPACK_DEBIAN_LIBQCOW2-DEV_PACKAGE_SECTION libdevel)
set(CPACK_DEBIAN_LIBQCOW2-DEV_DESCRIPTION
"library for QEMU qcow2 images and backing chains (development files)
libqcow2 parses, validates, reads, writes, checks and commits QEMU qcow2
and raw disk images and their backing chains.  This package holds the
headers, the pkg-config file, the CMake package and the manual page.")
set(CPACK_COMPONENT_LIBQCOW2-DEV_DEPENDS libqcow2)
set(CPACK_DEBIAN_LIBQCOW2-DEV_PACKAGE_DEPENDS
    "zlib1g-dev, libzstd-dev, uuid-dev")

include(CPack)
