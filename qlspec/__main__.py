from qlspec.cli import main

main()
