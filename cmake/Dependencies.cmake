# Third-party dependencies, all from Debian 12 packages (see scripts/setup).
# Imported targets keep their include directories as SYSTEM includes, so
# -Werror applies to our code only.
find_package(Threads REQUIRED)
find_package(absl REQUIRED)
find_package(Boost 1.74 REQUIRED)
find_package(PkgConfig REQUIRED)
pkg_check_modules(PQXX REQUIRED IMPORTED_TARGET libpqxx>=6.4)
find_package(RapidJSON REQUIRED)
# SHA-256, random tokens, constant-time comparison (framework/auth).
find_package(OpenSSL 3 REQUIRED)
# Command lines (app/cli.cc); header-only.
find_package(CLI11 2.1 REQUIRED)

if(NOT TARGET cqrs_third_party::rapidjson)
  add_library(cqrs_third_party::rapidjson INTERFACE IMPORTED)
  set_target_properties(cqrs_third_party::rapidjson PROPERTIES
    INTERFACE_INCLUDE_DIRECTORIES "${RAPIDJSON_INCLUDE_DIRS}"
    INTERFACE_COMPILE_DEFINITIONS "RAPIDJSON_HAS_STDSTRING=1")
endif()
