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
# Outgoing HTTP for webhook deliveries (framework/http/client.h): the
# multi interface, keep-alive, TLS verification through OpenSSL.
find_package(CURL REQUIRED)
# AMQP 0-9-1 to RabbitMQ (integration/amqp_client.h): rabbitmq-c, the
# long-standing C client, packaged by Debian as librabbitmq-dev.
pkg_check_modules(RABBITMQ REQUIRED IMPORTED_TARGET librabbitmq>=0.11)
# Command lines (app/cli.cc); header-only.
find_package(CLI11 2.1 REQUIRED)

if(NOT TARGET cqrs_third_party::rapidjson)
  add_library(cqrs_third_party::rapidjson INTERFACE IMPORTED)
  set_target_properties(cqrs_third_party::rapidjson PROPERTIES
    INTERFACE_INCLUDE_DIRECTORIES "${RAPIDJSON_INCLUDE_DIRS}"
    INTERFACE_COMPILE_DEFINITIONS "RAPIDJSON_HAS_STDSTRING=1")
  # SSE2 is in every x86-64 CPU: RapidJSON then scans strings and whitespace
  # 16 bytes at a time when it parses and writes. Its aligned loads may read
  # past the end of a string (never past a page), which AddressSanitizer
  # reports: configure sanitizer builds with -DCQRS_RAPIDJSON_SIMD=OFF.
  option(CQRS_RAPIDJSON_SIMD "RapidJSON's SSE2 string and whitespace scans" ON)
  if(CQRS_RAPIDJSON_SIMD AND CMAKE_SYSTEM_PROCESSOR MATCHES "^(x86_64|AMD64)$")
    set_property(TARGET cqrs_third_party::rapidjson APPEND PROPERTY
      INTERFACE_COMPILE_DEFINITIONS "RAPIDJSON_SSE2")
  endif()
endif()
