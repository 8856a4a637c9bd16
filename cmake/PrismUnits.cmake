# prism's folders as units of the build: each folder of core/ (and the collectives, the GPU layer
# and the Python binding) names the folders its code may include from, and the build checks it.
#
#   prism_unit(<name> FOLDER <dir> [SOURCES <file>...] [DEPENDS <unit>...] [TARGET <target>])
#
# makes target prism_unit_<name>: an object library of SOURCES (or an interface library when a
# unit has headers only), with the usage requirements of PRISM_UNIT_USAGE (the include roots and
# the libraries the core's code uses) and of the units it DEPENDS on. With TARGET, the unit is a
# library built elsewhere (the collectives, the Python module, the GPU layer's objects), which
# links the shared core for the symbols; it is only declared here, for the check. Every unit
# shares one include root (core/: `#include "worker/core_worker.h"`), so the compiler alone would
# let any folder include any other; the check below fails the build instead when a file includes
# a header of a unit that its unit does not depend on (directly: a dependency's dependencies
# must be declared where they are used).

set_property(GLOBAL PROPERTY PRISM_UNITS "")

function(prism_unit name)
  cmake_parse_arguments(PARSE_ARGV 1 U "" "FOLDER;TARGET" "SOURCES;DEPENDS")
  if(NOT U_FOLDER)
    message(FATAL_ERROR "prism_unit(${name}): FOLDER is required")
  endif()
  if(NOT U_TARGET)
    set(target prism_unit_${name})
    if(U_SOURCES)
      add_library(${target} OBJECT ${U_SOURCES})
      target_link_libraries(${target} PUBLIC ${PRISM_UNIT_USAGE})
      set(scope PUBLIC)
    else()
      add_library(${target} INTERFACE)
      target_link_libraries(${target} INTERFACE ${PRISM_UNIT_USAGE})
      set(scope INTERFACE)
    endif()
    # (Object libraries linked to one another share usage requirements only; their objects go
    # into the shared core once, through $<TARGET_OBJECTS>.)
    foreach(dep ${U_DEPENDS})
      target_link_libraries(${target} ${scope} prism_unit_${dep})
    endforeach()
  endif()
  set_property(GLOBAL APPEND PROPERTY PRISM_UNITS "${name}")
  set_property(GLOBAL PROPERTY PRISM_UNIT_${name}_FOLDER "${U_FOLDER}")
  set_property(GLOBAL PROPERTY PRISM_UNIT_${name}_DEPENDS "${U_DEPENDS}")
endfunction()

# The layering check, run as part of every build: call once, after every prism_unit(), with the
# targets that must not build before it passed.
function(prism_check_units)
  get_property(units GLOBAL PROPERTY PRISM_UNITS)
  set(spec "")
  foreach(unit ${units})
    get_property(folder GLOBAL PROPERTY PRISM_UNIT_${unit}_FOLDER)
    get_property(deps GLOBAL PROPERTY PRISM_UNIT_${unit}_DEPENDS)
    string(REPLACE ";" "," deps "${deps}")
    list(APPEND spec "${unit}=${folder}=${deps}")
  endforeach()
  string(REPLACE ";" "|" spec "${spec}")
  add_custom_target(prism_units_checked ALL
    COMMAND ${CMAKE_COMMAND} "-DPRISM_UNITS=${spec}" -P ${PROJECT_SOURCE_DIR}/cmake/check_units.cmake
    COMMENT "Checking that each unit includes only from the units it depends on"
    VERBATIM)
  foreach(target ${ARGN})
    add_dependencies(${target} prism_units_checked)
  endforeach()
endfunction()
