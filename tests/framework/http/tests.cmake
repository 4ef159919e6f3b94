# Sources of the HTTP runtime's tests (included by tests/CMakeLists.txt).
set(CQRS_HTTP_TEST_SOURCES
  ${CMAKE_CURRENT_SOURCE_DIR}/framework/http/address_policy_test.cc
  ${CMAKE_CURRENT_SOURCE_DIR}/framework/http/auth_test.cc
  ${CMAKE_CURRENT_SOURCE_DIR}/framework/http/client_test.cc
  ${CMAKE_CURRENT_SOURCE_DIR}/framework/http/json_body_test.cc
  ${CMAKE_CURRENT_SOURCE_DIR}/framework/http/log_test.cc
  ${CMAKE_CURRENT_SOURCE_DIR}/framework/http/message_test.cc
  ${CMAKE_CURRENT_SOURCE_DIR}/framework/http/router_test.cc
  ${CMAKE_CURRENT_SOURCE_DIR}/framework/http/server_test.cc
  ${CMAKE_CURRENT_SOURCE_DIR}/framework/http/status_mapping_test.cc
  ${CMAKE_CURRENT_SOURCE_DIR}/framework/http/stream_test.cc
  ${CMAKE_CURRENT_SOURCE_DIR}/framework/http/tls_test.cc
)
