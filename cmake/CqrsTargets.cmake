# Warning flags for our own code. Third-party headers come in through
# imported targets and are therefore system includes.
set(CQRS_WARNING_FLAGS -Wall -Wextra -Werror)

# cqrs_library(<folder> SOURCES ... DEPS ...)
# One static library per folder, named cqrs_<folder> with alias cqrs::<folder>.
function(cqrs_library name)
  cmake_parse_arguments(ARG "" "" "SOURCES;DEPS" ${ARGN})
  add_library(cqrs_${name} STATIC ${ARG_SOURCES})
  add_library(cqrs::${name} ALIAS cqrs_${name})
  target_include_directories(cqrs_${name} PUBLIC
    $<BUILD_INTERFACE:${PROJECT_SOURCE_DIR}>)
  # Public headers need C++17; installed targets pass that on to users.
  target_compile_features(cqrs_${name} PUBLIC cxx_std_17)
  target_compile_options(cqrs_${name} PRIVATE ${CQRS_WARNING_FLAGS})
  target_link_libraries(cqrs_${name} PUBLIC ${ARG_DEPS})
endfunction()

# A folder that later issues fill: an interface library with no API yet, so
# the dependency graph is already in place.
function(cqrs_placeholder_library name)
  cmake_parse_arguments(ARG "" "" "DEPS" ${ARGN})
  add_library(cqrs_${name} INTERFACE)
  add_library(cqrs::${name} ALIAS cqrs_${name})
  target_link_libraries(cqrs_${name} INTERFACE ${ARG_DEPS})
endfunction()

function(cqrs_executable name)
  cmake_parse_arguments(ARG "" "" "SOURCES;DEPS" ${ARGN})
  add_executable(${name} ${ARG_SOURCES})
  target_compile_options(${name} PRIVATE ${CQRS_WARNING_FLAGS})
  target_link_libraries(${name} PRIVATE ${ARG_DEPS})
endfunction()
