# `cmake --install build --prefix P`: the gpt command, libgptcpp with its headers,
# a CMake package (find_package(gptcpp) -> gptcpp::gptcpp), a pkg-config file,
# and man pages. Everything is relocatable: the prefix may be chosen at install time.
include(CMakePackageConfigHelpers)

install(TARGETS gpt RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})
install(TARGETS gptcpp EXPORT gptcppTargets
        LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR}
        INCLUDES DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
install(FILES include/gpt.h DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
# The C++ API: the library's headers, without the command line, the server and
# the kernels' internal SIMD helpers (they need compiler intrinsics and oneDNN).
install(DIRECTORY src/gpt/ DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}/gpt
        FILES_MATCHING PATTERN "*.h"
        PATTERN cli EXCLUDE PATTERN serving EXCLUDE PATTERN capi EXCLUDE
        PATTERN avx512.h EXCLUDE PATTERN bf16_primitives.h EXCLUDE PATTERN thread_share.h EXCLUDE
        PATTERN fast_math.h EXCLUDE PATTERN dispatch.h EXCLUDE)

set(GPT_CMAKE_DIR ${CMAKE_INSTALL_LIBDIR}/cmake/gptcpp)
install(EXPORT gptcppTargets NAMESPACE gptcpp:: DESTINATION ${GPT_CMAKE_DIR})
configure_package_config_file(cmake/gptcppConfig.cmake.in ${CMAKE_CURRENT_BINARY_DIR}/gptcppConfig.cmake
                              INSTALL_DESTINATION ${GPT_CMAKE_DIR})
# 0.x: a minor version may change the API.
write_basic_package_version_file(${CMAKE_CURRENT_BINARY_DIR}/gptcppConfigVersion.cmake
                                 COMPATIBILITY SameMinorVersion)
install(FILES ${CMAKE_CURRENT_BINARY_DIR}/gptcppConfig.cmake ${CMAKE_CURRENT_BINARY_DIR}/gptcppConfigVersion.cmake
        DESTINATION ${GPT_CMAKE_DIR})

# pkg-config finds the prefix from the .pc file's own place (${pcfiledir}).
file(RELATIVE_PATH GPT_PC_TO_PREFIX /prefix/${CMAKE_INSTALL_LIBDIR}/pkgconfig /prefix)
configure_file(cmake/gptcpp.pc.in ${CMAKE_CURRENT_BINARY_DIR}/gptcpp.pc @ONLY)
install(FILES ${CMAKE_CURRENT_BINARY_DIR}/gptcpp.pc DESTINATION ${CMAKE_INSTALL_LIBDIR}/pkgconfig)

if(GPT_MAN)
  find_program(HELP2MAN help2man)
  if(HELP2MAN)
    set(GPT_MAN_DIR ${CMAKE_CURRENT_BINARY_DIR}/man)
    add_custom_command(
      OUTPUT ${GPT_MAN_DIR}/commands.txt
      COMMAND ${CMAKE_COMMAND} -DGPT=$<TARGET_FILE:gpt> -DHELP2MAN=${HELP2MAN} -DOUT=${GPT_MAN_DIR}
              -DVERSION=${PROJECT_VERSION} -P ${CMAKE_CURRENT_SOURCE_DIR}/cmake/man_pages.cmake
      DEPENDS gpt ${CMAKE_CURRENT_SOURCE_DIR}/cmake/man_pages.cmake
      COMMENT "Writing man pages from the commands' help")
    add_custom_target(man_pages ALL DEPENDS ${GPT_MAN_DIR}/commands.txt)
    install(DIRECTORY ${GPT_MAN_DIR}/ DESTINATION ${CMAKE_INSTALL_MANDIR}/man1 FILES_MATCHING PATTERN "*.1")
  else()
    message(WARNING "help2man not found: no man pages (apt-get install help2man)")
  endif()
endif()
