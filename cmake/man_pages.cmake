# Writes man pages from the commands' own help with help2man (cmake -P):
#   GPT=path/to/gpt HELP2MAN=path/to/help2man OUT=dir VERSION=x.y.z
# gpt.1 from `gpt --help`, and gpt-<command>.1 for every subcommand that help
# lists (so a new subcommand gets its page without touching this file).
execute_process(COMMAND ${GPT} --help OUTPUT_VARIABLE help RESULT_VARIABLE rc)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "gpt --help failed (${rc})")
endif()
file(MAKE_DIRECTORY ${OUT})
string(REPLACE "\n" ";" lines "${help}")
set(in_subcommands FALSE)
set(commands "")
foreach(line IN LISTS lines)
  if(line MATCHES "^Subcommands:")
    set(in_subcommands TRUE)
  elseif(in_subcommands AND line MATCHES "^  ([a-z]+) +(.*)$")
    list(APPEND commands ${CMAKE_MATCH_1})
    set(description_${CMAKE_MATCH_1} "${CMAKE_MATCH_2}")
  endif()
endforeach()
if(NOT commands)
  message(FATAL_ERROR "no subcommands found in gpt --help")
endif()

set(see_also "[SEE ALSO]\n")
foreach(c IN LISTS commands)
  string(APPEND see_also ".BR gpt-${c} (1)\n")
endforeach()
file(WRITE ${OUT}/see_also.h2m "${see_also}")

# help2man runs the program with the option; a wrapper runs `gpt <command> --help`.
execute_process(COMMAND ${HELP2MAN} --no-info --no-discard-stderr --version-string=${VERSION}
                        --name=train,\ evaluate\ and\ run\ GPT\ language\ models --include=${OUT}/see_also.h2m
                        --output=${OUT}/gpt.1 ${GPT} RESULT_VARIABLE rc)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "help2man gpt failed (${rc})")
endif()
foreach(c IN LISTS commands)
  set(wrapper ${OUT}/gpt-${c})
  file(WRITE ${wrapper} "#!/bin/sh\nexec '${GPT}' ${c} \"$@\"\n")
  file(CHMOD ${wrapper} PERMISSIONS OWNER_READ OWNER_WRITE OWNER_EXECUTE GROUP_READ GROUP_EXECUTE WORLD_READ)
  # The page's title line names "gpt-<command>"; its name line says what it does.
  string(REGEX REPLACE "[:;].*" "" name "${description_${c}}")
  execute_process(COMMAND ${HELP2MAN} --no-info --no-discard-stderr --version-string=${VERSION} "--name=${name}"
                          --output=${OUT}/gpt-${c}.1 ${wrapper} RESULT_VARIABLE rc)
  file(REMOVE ${wrapper})
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "help2man gpt ${c} failed (${rc})")
  endif()
endforeach()
file(REMOVE ${OUT}/see_also.h2m)
list(JOIN commands " " listed)
file(WRITE ${OUT}/commands.txt "${listed}\n")
