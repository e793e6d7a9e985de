{#- Nothing rendered for role garbd yet; its tier adds states here. #}
