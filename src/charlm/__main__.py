from charlm.app import main

main()
