# Packaging tests (included by tests/CMakeLists.txt). They use the build
# tree itself: run them after a full `cmake --build` (scripts/test does).
set(CQRS_PACKAGING_WORK_DIR ${CMAKE_BINARY_DIR}/packaging-test)

# `cmake --install` into a scratch prefix, then docs/example-app and
# docs/inventory-app built against it with find_package(cqrs); the apps are
# tested from outside by examples_test (tests/CMakeLists.txt).
add_test(NAME packaging_find_package
  COMMAND ${CMAKE_CURRENT_LIST_DIR}/find_package_test.sh
    ${CMAKE_COMMAND} ${CMAKE_BINARY_DIR} ${PROJECT_SOURCE_DIR}
    ${CQRS_PACKAGING_WORK_DIR})
set_tests_properties(packaging_find_package PROPERTIES
  TIMEOUT 900
  LABELS packaging
  FIXTURES_SETUP cqrs_example_app
  # Also reinstalls into the work dir: never two at once.
  RESOURCE_LOCK cqrs_packaging_work_dir)

add_test(NAME packaging_compose_config
  COMMAND ${CMAKE_CURRENT_LIST_DIR}/compose_config_test.sh
    ${PROJECT_SOURCE_DIR})
set_tests_properties(packaging_compose_config PROPERTIES
  TIMEOUT 120
  LABELS packaging)

# The Dockerfile's runtime packages cover what the bank links.
add_test(NAME packaging_runtime_packages
  COMMAND ${CMAKE_CURRENT_LIST_DIR}/runtime_packages_test.sh
    $<TARGET_FILE:bank> ${PROJECT_SOURCE_DIR}/Dockerfile)
set_tests_properties(packaging_runtime_packages PROPERTIES
  TIMEOUT 120
  LABELS packaging)
# ... and what rewards links (the image carries both).
add_test(NAME packaging_runtime_packages_rewards
  COMMAND ${CMAKE_CURRENT_LIST_DIR}/runtime_packages_test.sh
    $<TARGET_FILE:rewards> ${PROJECT_SOURCE_DIR}/Dockerfile)
set_tests_properties(packaging_runtime_packages_rewards PROPERTIES
  TIMEOUT 120
  LABELS packaging)
