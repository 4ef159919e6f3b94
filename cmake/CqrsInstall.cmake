# `cmake --install` support: the framework's libraries, their public headers
# and a CMake package, so that another project can write
#
#   find_package(cqrs 0.1 REQUIRED)
#   target_link_libraries(app PRIVATE cqrs::commands cqrs::queries)
#
# (docs/example-app/ is such a project). The bank is not installed.
#
# Layout under the prefix:
#   lib/libcqrs_<module>.a
#   include/cqrs/<module>/...h     headers keep their paths from the source
#                                  root, so `#include "framework/pg_pool.h"`
#                                  works; the extra `cqrs/` level keeps
#                                  generic names such as `framework/` out of
#                                  a shared include directory
#   lib/cmake/cqrs/                cqrsConfig.cmake, its version file and the
#                                  exported targets cqrs::<module>
include(GNUInstallDirs)
include(CMakePackageConfigHelpers)

set(CQRS_INSTALL_INCLUDEDIR ${CMAKE_INSTALL_INCLUDEDIR}/cqrs)
set(CQRS_INSTALL_CMAKEDIR ${CMAKE_INSTALL_LIBDIR}/cmake/cqrs)

# In dependency order. Private headers (`<module>/internal/`) stay behind:
# no public header includes one (tests/packaging/find_package_test.sh
# checks that every include of an installed header resolves).
set(CQRS_INSTALLED_MODULES framework eventstore projections commands integration queries
  app)

set(cqrs_installed_targets)
foreach(module IN LISTS CQRS_INSTALLED_MODULES)
  # Exported as cqrs::<module>, the same name as the in-tree alias.
  set_target_properties(cqrs_${module} PROPERTIES EXPORT_NAME ${module})
  list(APPEND cqrs_installed_targets cqrs_${module})
  # Matched at install time, so a new header needs no change here.
  install(DIRECTORY ${PROJECT_SOURCE_DIR}/${module}/
    DESTINATION ${CQRS_INSTALL_INCLUDEDIR}/${module}
    FILES_MATCHING PATTERN "*.h"
    PATTERN "internal" EXCLUDE)
endforeach()

install(TARGETS ${cqrs_installed_targets}
  EXPORT cqrsTargets
  ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR}
  INCLUDES DESTINATION ${CQRS_INSTALL_INCLUDEDIR})
install(EXPORT cqrsTargets
  NAMESPACE cqrs::
  DESTINATION ${CQRS_INSTALL_CMAKEDIR})

configure_package_config_file(
  ${CMAKE_CURRENT_LIST_DIR}/cqrsConfig.cmake.in
  ${PROJECT_BINARY_DIR}/cqrsConfig.cmake
  INSTALL_DESTINATION ${CQRS_INSTALL_CMAKEDIR})
# find_package(cqrs 0.1) accepts any 0.y.z with y >= 1.
write_basic_package_version_file(
  ${PROJECT_BINARY_DIR}/cqrsConfigVersion.cmake
  VERSION ${PROJECT_VERSION}
  COMPATIBILITY SameMajorVersion)
install(FILES
  ${PROJECT_BINARY_DIR}/cqrsConfig.cmake
  ${PROJECT_BINARY_DIR}/cqrsConfigVersion.cmake
  DESTINATION ${CQRS_INSTALL_CMAKEDIR})
