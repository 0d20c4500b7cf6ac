from services.capacity.app import main

main()
