{#- Nothing rendered for role filer yet; its tier adds states here. #}
